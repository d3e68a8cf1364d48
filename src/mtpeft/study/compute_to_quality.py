"""Compute to reach quality: how much training one shared run needs against N single-task runs.

Equal-step runs give a compute ratio near 1 by construction (a multi-task step does N tasks' work), so
they cannot test the published "up to 85% less compute". What can: each run's validation curve against
its cumulative training compute (training/trainer.py records it at every validation), read as

- a single-task run's compute to reach quality: the first validation at which its task's primary score
  is within `tolerance` of that run's best;
- the shared run's compute to reach quality: the first validation at which EVERY task is within
  `tolerance` of its single-task run's best (the same targets), or "not reached";
- the ratio: shared compute / the N single runs' compute summed, per seed; 1 - ratio is the saving.
  The study's 85% is a ratio of 0.15.

Resolution is the validation interval (eval_every): a run reaching quality between two validations is
counted at the later one, for both settings alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtpeft.store import RunRecord
from mtpeft.study.records import Arm, StudyRuns
from mtpeft.study.stats import MIN_SEEDS_FOR_T, Estimate, t_interval

TOLERANCE = 0.01  # absolute, on each task's primary metric (all are in [0, 1])
# Also reported: with a few hundred validation examples a 0.01 target can sit inside the noise.
LOOSER_TOLERANCES = (0.02, 0.05)
COMPUTE_KEYS = ("train_flops_estimate", "tokens", "wall_time_s")
STUDY_CLAIMED_RATIO = 0.15  # "cuts compute by up to 85%"


@dataclass(frozen=True)
class CurvePoint:
    step: int
    compute: dict[str, float]
    valid: dict[str, float]  # task -> primary score on valid
    test: dict[str, float]  # task -> primary score on test (curve_test runs only)


def curve_of(record: RunRecord, primary: dict[str, str]) -> list[CurvePoint]:
    """The run's validation curve (empty for runs trained before curves were recorded)."""
    points = []
    for entry in record.details.get("curve", []) or []:
        valid = _primaries(entry.get("metrics", {}), primary)
        test = _primaries(entry.get("test", {}), primary)
        points.append(CurvePoint(int(entry["step"]), dict(entry.get("compute", {})), valid, test))
    return points


def _primaries(metrics: dict[str, dict[str, float]], primary: dict[str, str]) -> dict[str, float]:
    return {t: float(m[primary[t]]) for t, m in metrics.items() if t in primary and primary[t] in m}


def first_reaching(curve: Sequence[CurvePoint], targets: dict[str, float]) -> CurvePoint | None:
    """The first point where every target task's valid score is at least its target."""
    for point in curve:
        if all(point.valid.get(task, -np.inf) >= target for task, target in targets.items()):
            return point
    return None


@dataclass
class SeedRatio:
    seed: int
    single: dict[str, dict[str, float]]  # task -> compute at which its single run reached quality
    shared: dict[str, float] | None  # compute at which the shared run reached every target; None: never
    targets: dict[str, float]  # task -> single-task best - tolerance
    shared_best: dict[str, float]  # task -> the shared run's best valid score
    missed: list[str]  # tasks the shared run never brought within tolerance of single-task quality
    shared_step: int | None = None  # the shared run's step at which it reached every target

    def ratio(self, key: str) -> float | None:
        total = sum(c.get(key, 0.0) for c in self.single.values())
        if self.shared is None or not total:
            return None
        return self.shared.get(key, 0.0) / total


@dataclass
class ComputeToQuality:
    arm: Arm
    tasks: list[str]
    tolerance: float
    seeds: list[SeedRatio] = field(default_factory=list)

    def estimate(self, key: str = "train_flops_estimate") -> Estimate:
        """Mean shared / single ratio over seeds that reached quality, with its interval where possible."""
        values = [r for r in (s.ratio(key) for s in self.seeds) if r is not None]
        if not values:
            return Estimate(None, n_seeds=0, ci="none: the shared run never reached single-task quality")
        mean = float(np.mean(values))
        if len(values) >= MIN_SEEDS_FOR_T:
            return Estimate(mean, *t_interval(values), len(values), f"t over {len(values)} seeds")
        span = f"range over {len(values)} seeds" if len(values) > 1 else "one seed: no interval"
        lo, hi = (min(values), max(values)) if len(values) > 1 else (None, None)
        return Estimate(mean, lo, hi, len(values), span)

    @property
    def reached(self) -> int:
        return sum(s.shared is not None for s in self.seeds)


def compute_to_quality(runs: StudyRuns, *, tolerance: float = TOLERANCE) -> list[ComputeToQuality]:
    """Per arm with an all-task run and every single-task run (with curves), the ratio per seed."""
    everything = runs.all_group
    if len(everything) < 2:
        return []
    results = []
    for arm in runs.arms:
        shared_runs = runs.runs(arm, everything)
        singles = {task: runs.runs(arm, (task,)) for task in everything}
        result = ComputeToQuality(arm, list(everything), tolerance)
        for seed, shared in sorted(shared_runs.items()):
            seed_ratio = _seed_ratio(
                runs, seed, shared, {t: by_seed.get(seed) for t, by_seed in singles.items()}, tolerance
            )
            if seed_ratio is not None:
                result.seeds.append(seed_ratio)
        if result.seeds:
            results.append(result)
    return results


def _seed_ratio(
    runs: StudyRuns,
    seed: int,
    shared: RunRecord,
    singles: dict[str, RunRecord | None],
    tolerance: float,
) -> SeedRatio | None:
    shared_curve = curve_of(shared, runs.primary)
    single_curves = {t: curve_of(r, runs.primary) if r is not None else [] for t, r in singles.items()}
    if not shared_curve or not all(single_curves.values()):
        return None  # a run is missing or predates curves: nothing to compare on this seed
    targets, reached = {}, {}
    for task, curve in single_curves.items():
        best = max(p.valid.get(task, -np.inf) for p in curve)
        targets[task] = best - tolerance
        point = first_reaching(curve, {task: targets[task]})
        assert point is not None  # its own best is within tolerance of itself
        reached[task] = point.compute
    shared_point = first_reaching(shared_curve, targets)
    best_shared = {t: max(p.valid.get(t, -np.inf) for p in shared_curve) for t in targets}
    missed = [t for t in targets if best_shared[t] < targets[t]]
    return SeedRatio(
        seed,
        reached,
        shared_point.compute if shared_point else None,
        targets,
        best_shared,
        missed,
        shared_point.step if shared_point else None,
    )


def budget_points(records: Sequence[RunRecord], primary: dict[str, str]) -> list[dict[str, Any]]:
    """The all-task run's curve averaged over seeds at each step the seeds share: the budget curve.

    Each point: step, mean compute (each key), mean valid and test score per task (test where the runs
    scored it at every validation, `curve_test`).
    """
    curves = [curve_of(r, primary) for r in records]
    curves = [c for c in curves if c]
    if not curves:
        return []
    steps = sorted(set.intersection(*({p.step for p in c} for c in curves)))
    out = []
    for step in steps:
        at = [next(p for p in c if p.step == step) for c in curves]
        compute = {k: float(np.mean([p.compute.get(k, np.nan) for p in at])) for k in COMPUTE_KEYS}
        tasks = sorted(set.intersection(*(set(p.valid) for p in at)))
        valid = {t: float(np.mean([p.valid[t] for p in at])) for t in tasks}
        tested = [t for t in tasks if all(t in p.test for p in at)]
        test = {t: float(np.mean([p.test[t] for p in at])) for t in tested}
        out.append({"step": step, "seeds": len(at), "compute": compute, "valid": valid, "test": test})
    return out
