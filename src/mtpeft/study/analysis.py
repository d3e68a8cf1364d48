"""The study's analyses, recomputed from the store's records every time (nothing is cached on disk).

Per arm (model x method), on each task's primary test metric (all metrics: higher is better):
- single vs multi: score in the run of all tasks minus the single-task score, mean over seeds, 95% CI;
- PEFT vs full fine-tuning, both multi-task (all tasks);
- transfer T[i][j]: score of task i co-trained with j alone (pair run) minus its single-task score;
  asymmetry T[i][j] - T[j][i];
- stability: std over seeds of each single-task score, and the range of a task's score over groupings;
- cost: N single-task runs summed vs one multi-task run;
- grouping recommendation (see grouping.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mtpeft.store import RunRecord
from mtpeft.study.compute_to_quality import LOOSER_TOLERANCES, ComputeToQuality, compute_to_quality
from mtpeft.study.grouping import Cost, GroupScorer, Recommendation, recommend
from mtpeft.study.records import SPLIT, Arm, StudyRuns
from mtpeft.study.stats import Estimate, Loader, diff_estimate, score_estimate

if TYPE_CHECKING:
    from mtpeft.study.merged_arms import MergedCost, MergedTask

COST_KEYS = (
    "shared_params",
    "head_params",
    "trainable_params",
    "stored_bytes",
    "tokens",
    "train_flops_estimate",
    "wall_time_s",
    "peak_memory_bytes",
)


@dataclass(frozen=True)
class Comparison:
    """`left` - `right` for one task of one arm."""

    arm: Arm
    task: str
    metric: str
    left: Estimate
    right: Estimate
    diff: Estimate


@dataclass(frozen=True)
class TransferMatrix:
    arm: Arm
    tasks: list[str]
    values: np.ndarray  # T[i][j]; NaN on the diagonal and where the pair was not run

    @property
    def asymmetry(self) -> np.ndarray:
        return self.values - self.values.T

    def as_dict(self) -> dict[tuple[str, str], float]:
        n = len(self.tasks)
        return {
            (self.tasks[i], self.tasks[j]): float(self.values[i, j])
            for i in range(n)
            for j in range(n)
            if not np.isnan(self.values[i, j])
        }


@dataclass(frozen=True)
class Stability:
    arm: Arm
    task: str
    metric: str
    n_seeds: int
    mean: float | None
    std: float | None  # over seeds of the single-task score; None below 2 seeds
    grouped_min: float | None  # the task's score over every multi-task group it was run in
    grouped_max: float | None
    groups: int


@dataclass(frozen=True)
class CostComparison:
    """Mean over seeds where every single-task run and the all-task run finished."""

    arm: Arm
    n_tasks: int
    seeds: list[int]
    single: dict[str, float]  # N single-task runs summed
    multi: dict[str, float]  # one run of all tasks

    def ratio(self, key: str) -> float | None:
        """multi / single: below 1 means the shared module costs less."""
        base = self.single.get(key)
        return self.multi.get(key, 0.0) / base if base else None


@dataclass
class StudyAnalysis:
    study: str | None
    split: str
    runs: StudyRuns
    scores: dict[Arm, dict[tuple[str, ...], dict[str, Estimate]]] = field(default_factory=dict)
    single_vs_multi: list[Comparison] = field(default_factory=list)
    peft_vs_full: list[Comparison] = field(default_factory=list)
    transfer: dict[Arm, TransferMatrix] = field(default_factory=dict)
    stability: list[Stability] = field(default_factory=list)
    data_quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    costs: list[CostComparison] = field(default_factory=list)
    grouping: dict[Arm, Recommendation] = field(default_factory=dict)
    compute_to_quality: list[ComputeToQuality] = field(default_factory=list)
    compute_to_quality_looser: list[ComputeToQuality] = field(default_factory=list)  # LOOSER_TOLERANCES
    merged: list[MergedTask] = field(default_factory=list)  # merged arms vs their sources (merged_arms.py)
    merged_costs: list[MergedCost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return self.runs.tasks

    @property
    def arms(self) -> list[Arm]:
        return self.runs.arms


def _loader(runs: StudyRuns, arm: Arm, group: tuple[str, ...], task: str) -> Loader:
    by_seed = runs.runs(arm, group)
    return lambda seed: runs.per_example(by_seed[seed], task) if seed in by_seed else None


def score_table(runs: StudyRuns) -> dict[Arm, dict[tuple[str, ...], dict[str, Estimate]]]:
    """arm -> group -> task -> mean score over seeds with its CI."""
    table: dict[Arm, dict[tuple[str, ...], dict[str, Estimate]]] = {}
    for arm in runs.arms:
        for group in runs.groups(arm):
            table.setdefault(arm, {})[group] = {
                task: score_estimate(
                    runs.scores(arm, group, task), runs.primary[task], _loader(runs, arm, group, task)
                )
                for task in group
                if task in runs.primary
            }
    return table


def _compare(
    runs: StudyRuns,
    arm: Arm,
    task: str,
    left: tuple[Arm, tuple[str, ...]],
    right: tuple[Arm, tuple[str, ...]],
) -> Comparison | None:
    a, b = runs.scores(*left, task), runs.scores(*right, task)
    if not a or not b:
        return None
    metric = runs.primary[task]
    load_a, load_b = _loader(runs, *left, task), _loader(runs, *right, task)
    return Comparison(
        arm,
        task,
        metric,
        score_estimate(a, metric, load_a),
        score_estimate(b, metric, load_b),
        diff_estimate(a, b, metric, load_a, load_b),
    )


def single_vs_multi(runs: StudyRuns) -> list[Comparison]:
    everything = runs.all_group
    found = (
        _compare(runs, arm, task, (arm, everything), (arm, (task,)))
        for arm in runs.arms
        for task in runs.tasks
        if task in runs.primary and len(everything) > 1
    )
    return [c for c in found if c is not None]


def peft_vs_full(runs: StudyRuns) -> list[Comparison]:
    everything = runs.all_group
    comparisons = []
    for full in (a for a in runs.arms if a.is_full):
        for arm in runs.arms:  # trained PEFT arms (merged ones meet full in merged_arms.py)
            if arm.is_full or arm.merged or arm.model != full.model or not runs.same_task_settings(arm, full):
                continue
            for task in (t for t in runs.tasks if t in runs.primary):
                found = _compare(runs, arm, task, (arm, everything), (full, everything))
                if found is not None:
                    comparisons.append(found)
    return comparisons


def _mean(values: dict[int, float]) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def transfer_matrix(runs: StudyRuns, arm: Arm) -> TransferMatrix:
    tasks = runs.tasks
    values = np.full((len(tasks), len(tasks)), np.nan)
    for i, ti in enumerate(tasks):
        single = _mean(runs.single_scores(arm, ti))
        for j, tj in enumerate(tasks):
            if i == j or single is None:
                continue
            pair = tuple(sorted((ti, tj), key=tasks.index))
            paired = _mean(runs.scores(arm, pair, ti))
            if paired is not None:
                values[i, j] = paired - single
    return TransferMatrix(arm, list(tasks), values)


def stability(runs: StudyRuns) -> list[Stability]:
    rows = []
    for arm in runs.arms:
        for task in (t for t in runs.tasks if t in runs.primary):
            single = list(runs.single_scores(arm, task).values())
            grouped = [
                m
                for group in runs.groups(arm)
                if len(group) > 1
                and task in group
                and (m := _mean(runs.scores(arm, group, task))) is not None
            ]
            if not single and not grouped:
                continue
            rows.append(
                Stability(
                    arm,
                    task,
                    runs.primary[task],
                    len(single),
                    float(np.mean(single)) if single else None,
                    float(np.std(single, ddof=1)) if len(single) >= 2 else None,
                    min(grouped, default=None),
                    max(grouped, default=None),
                    len(grouped),
                )
            )
    return rows


def data_quality(runs: StudyRuns) -> dict[str, dict[str, Any]]:
    """Per task, the dataset-quality summary stored with the most recent run that has one."""
    quality: dict[str, dict[str, Any]] = {}
    for view in reversed(runs.views):
        for task, summary in (view.record.data_quality or {}).items():
            quality.setdefault(task, summary)
    return {t: quality[t] for t in runs.tasks if t in quality}


def _summed(records: list[RunRecord]) -> dict[str, float]:
    return {k: float(sum(r.cost.get(k, 0) or 0 for r in records)) for k in COST_KEYS}


def _averaged(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in COST_KEYS}


def cost_comparisons(runs: StudyRuns) -> list[CostComparison]:
    out = []
    for arm in runs.arms:
        multi = runs.runs(arm, runs.all_group)
        singles = {t: runs.runs(arm, (t,)) for t in runs.tasks}
        seeds = [s for s in multi if all(s in by_seed for by_seed in singles.values())]
        if not seeds or len(runs.tasks) < 2:
            continue
        single_rows = [_summed([singles[t][s] for t in runs.tasks]) for s in seeds]
        multi_rows = [_summed([multi[s]]) for s in seeds]
        # Peak memory is a maximum, not a sum.
        for row, s in zip(single_rows, seeds, strict=True):
            row["peak_memory_bytes"] = float(
                max(singles[t][s].cost.get("peak_memory_bytes", 0) for t in runs.tasks)
            )
        out.append(CostComparison(arm, len(runs.tasks), seeds, _averaged(single_rows), _averaged(multi_rows)))
    return out


def _group_cost(runs: StudyRuns, arm: Arm, group: tuple[str, ...]) -> Cost | None:
    by_seed = runs.runs(arm, group)
    if not by_seed:
        return None
    flops = [r.cost.get("train_flops_estimate") for r in by_seed.values()]
    walls = [r.cost.get("wall_time_s") for r in by_seed.values()]
    return Cost(
        None if None in flops else float(np.mean(flops)),
        None if None in walls else float(np.mean(walls)),
    )


def grouping_inputs(runs: StudyRuns, arm: Arm, matrix: TransferMatrix) -> dict[str, Any] | None:
    """What the grouping search scores a group from (GroupScorer's arguments); None without every
    task's single-task score."""
    tasks = [t for t in runs.tasks if t in runs.primary]
    single = {t: m for t in tasks if (m := _mean(runs.single_scores(arm, t))) is not None}
    if len(tasks) < 2 or len(single) < len(tasks):
        return None
    measured: dict[frozenset[str], dict[str, float]] = {}
    costs: dict[frozenset[str], Cost] = {}
    for group in runs.groups(arm):
        scores = {t: m for t in group if (m := _mean(runs.scores(arm, group, t))) is not None}
        if len(group) > 1 and len(scores) == len(group):
            measured[frozenset(group)] = scores
        if (cost := _group_cost(runs, arm, group)) is not None:
            costs[frozenset(group)] = cost
    return {
        "tasks": tasks,
        "single": single,
        "transfer": matrix.as_dict(),
        "measured": measured,
        "costs": costs,
    }


def grouping(
    runs: StudyRuns, arm: Arm, matrix: TransferMatrix, *, max_groups: int | None = None
) -> Recommendation | None:
    inputs = grouping_inputs(runs, arm, matrix)
    return None if inputs is None else recommend(**inputs, max_groups=max_groups)


def measured_scorer(runs: StudyRuns, arm: Arm, matrix: TransferMatrix) -> GroupScorer | None:
    """Scores any partition as the measured study does (what a cheap signal's grouping reached)."""
    inputs = grouping_inputs(runs, arm, matrix)
    return None if inputs is None else GroupScorer(**inputs)


def analyse(records: list[RunRecord], *, study: str | None = None, split: str = SPLIT) -> StudyAnalysis:
    from mtpeft.study.merged_arms import merged_costs, merged_tasks  # it builds on _compare above

    runs = StudyRuns(records, split=split)
    transfer = {arm: transfer_matrix(runs, arm) for arm in runs.arms}
    recommendations = {arm: grouping(runs, arm, transfer[arm]) for arm in runs.arms}
    return StudyAnalysis(
        study,
        split,
        runs,
        scores=score_table(runs),
        single_vs_multi=single_vs_multi(runs),
        peft_vs_full=peft_vs_full(runs),
        transfer=transfer,
        stability=stability(runs),
        data_quality=data_quality(runs),
        costs=cost_comparisons(runs),
        grouping={arm: rec for arm, rec in recommendations.items() if rec is not None},
        compute_to_quality=compute_to_quality(runs),
        compute_to_quality_looser=[
            r for t in LOOSER_TOLERANCES for r in compute_to_quality(runs, tolerance=t)
        ],
        merged=merged_tasks(runs),
        merged_costs=merged_costs(runs),
    )
