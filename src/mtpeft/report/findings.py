"""The report's "Findings": the published study's five claims, each held / not held / inconclusive here.

Decided from the numbers the other sections show, by rules stated in the section itself:

- (a) shared PEFT matches full multi-task fine-tuning and (b) multi-task PEFT stays close to single-task:
  per task, the difference's 95% interval against a tolerance of TOLERANCE on the primary metric. A task
  whose interval lies wholly below -TOLERANCE is worse; one whose interval lies wholly above it matches
  (or beats); otherwise it is unclear. Held: every task matches; not held: some task is worse;
  inconclusive otherwise.
- (c) parameters: the shared module's parameters against the single modules' (held when divided by the
  task count); compute: the compute-to-quality ratio against the study's 0.15.
- (d) pairing depends on the factors: held when the transfer matrix has a pair that helps and one that
  hurts beyond the tolerance; the evidence per factor (stability, architecture, complementarity,
  asymmetry, dataset quality) is listed whatever the verdict.
- (e) fine-tuned small model beats prompting: per task, the best fine-tuned score against the best
  prompted one in the same report (prompting runs of the same tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mtpeft.study.compute_to_quality import STUDY_CLAIMED_RATIO

if TYPE_CHECKING:
    from mtpeft.report.build import Context, Section
    from mtpeft.study.analysis import Comparison, StudyAnalysis
    from mtpeft.study.records import Arm

TOLERANCE = 0.02  # absolute, on the primary metric: what "matches" and "close" mean here
HELD, NOT_HELD, INCONCLUSIVE, NOT_MEASURED = "held", "not held", "inconclusive", "not measured"


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str
    evidence: str


def findings(a: StudyAnalysis) -> list[Finding]:
    return [_matches_full(a), _close_to_single(a), _cost(a), _grouping_factors(a), _prompting(a)]


def findings_section(a: StudyAnalysis, ctx: Context) -> Section:
    from mtpeft.report.build import Section, Table

    rows = [[f.claim, f.verdict, f.evidence] for f in findings(a)]
    return Section(
        "Findings: the study's claims at this scale",
        [
            Table(
                "The published study's claims, measured here",
                f"Rules: a difference 'matches' when its 95% interval lies above -{TOLERANCE} (on the "
                f"task's primary metric), is 'worse' when it lies below -{TOLERANCE}; a claim about tasks "
                "holds when every task matches, does not hold when one is worse, and is inconclusive "
                "otherwise. The "
                f"compute claim is the compute-to-quality ratio against {STUDY_CLAIMED_RATIO} (85% less). "
                "Differences are the shared module minus the other setting: higher is better. Verdicts are "
                "for this study's models, data and budget only.",
                ["claim", "verdict", "the numbers that decide it"],
                rows,
            ),
            _budget_used(a),
        ],
    )


# ---- (a), (b): differences against a tolerance --------------------------------------------------------
def _task_verdict(c: Comparison) -> str:
    d = c.diff
    if d.has_ci:
        if d.hi < -TOLERANCE:  # type: ignore[operator]
            return "worse"
        if d.lo >= -TOLERANCE:  # type: ignore[operator]
            return "matches"
    return "unclear"


def _verdict(comparisons: Sequence[Comparison]) -> tuple[str, str]:
    if not comparisons:
        return NOT_MEASURED, ""
    labels = [_task_verdict(c) for c in comparisons]
    verdict = NOT_HELD if "worse" in labels else HELD if set(labels) == {"matches"} else INCONCLUSIVE
    parts = [
        f"{c.task} {c.diff.mean:+.3f}"
        + (f" [{c.diff.lo:+.3f}, {c.diff.hi:+.3f}]" if c.diff.has_ci else " (no interval)")
        + f" {label}"
        for c, label in zip(comparisons, labels, strict=True)
        if c.diff.mean is not None
    ]
    return verdict, "; ".join(parts)


def _by_arm(comparisons: Sequence[Comparison]) -> dict[str, list[Comparison]]:
    grouped: dict[str, list[Comparison]] = {}
    for c in comparisons:
        grouped.setdefault(str(c.arm), []).append(c)
    return grouped


def _combined(claim: str, comparisons: Sequence[Comparison], what: str, missing: str) -> Finding:
    arms = _by_arm(comparisons)
    if not arms:
        return Finding(claim, NOT_MEASURED, missing)
    verdicts, texts = [], []
    for arm, found in arms.items():
        verdict, text = _verdict(found)
        verdicts.append(verdict)
        texts.append(f"{arm}, {what}: {text} -> {verdict}")
    overall = verdicts[0] if len(set(verdicts)) == 1 else INCONCLUSIVE
    return Finding(claim, overall, ". ".join(texts))


def _matches_full(a: StudyAnalysis) -> Finding:
    return _combined(
        "(a) one shared PEFT module matches full multi-task fine-tuning",
        a.peft_vs_full,
        "shared PEFT - shared full, per task",
        "needs an all-task run of a PEFT method and of `full` on the same model",
    )


def _close_to_single(a: StudyAnalysis) -> Finding:
    peft = [c for c in a.single_vs_multi if not c.arm.is_full]
    return _combined(
        "(b) multi-task PEFT stays close to single-task PEFT",
        peft,
        "shared - single, per task",
        "needs single-task and all-task runs of a PEFT method",
    )


# ---- (c) ----------------------------------------------------------------------------------------------
def _cost(a: StudyAnalysis) -> Finding:
    claim = "(c) trainable parameters fall by the task count; compute by up to 85%"
    params = []
    for c in (c for c in a.costs if not c.arm.is_full):
        r = c.ratio("shared_params")
        if r:
            params.append((str(c.arm), 1 / r, c.n_tasks))
    compute = [(str(r.arm), r.estimate(), r) for r in a.compute_to_quality if not r.arm.is_full]
    if not params and not compute:
        return Finding(claim, NOT_MEASURED, "needs single-task and all-task runs of a PEFT method")
    texts = [f"{arm}: shared-module parameters divided by {div:.2f} ({n} tasks)" for arm, div, n in params]
    params_held = all(abs(div - n) < 1e-6 for _, div, n in params) if params else None
    compute_verdicts = []
    for arm, e, result in compute:
        if e.mean is None:
            missed = sorted({t for s in result.seeds for t in s.missed})
            texts.append(f"{arm}: the shared run never reached single-task quality on {', '.join(missed)}")
            compute_verdicts.append(NOT_HELD)
            continue
        bounds = f" [{e.lo:.2f}, {e.hi:.2f}]" if e.has_ci else ""
        texts.append(
            f"{arm}: compute to reach quality, shared / single {e.mean:.2f}{bounds} ({e.ci}): "
            f"{1 - e.mean:.0%} less; the shared run reached single-task quality in {result.reached} of "
            f"{len(result.seeds)} seeds"
        )
        if e.mean <= STUDY_CLAIMED_RATIO and (not e.has_ci or e.hi <= STUDY_CLAIMED_RATIO):  # type: ignore[operator]
            compute_verdicts.append(HELD)
        elif e.has_ci and e.lo > STUDY_CLAIMED_RATIO or not e.has_ci:  # type: ignore[operator]
            compute_verdicts.append(NOT_HELD)
        else:
            compute_verdicts.append(INCONCLUSIVE)
    for result in a.compute_to_quality_looser:
        if result.arm.is_full:
            continue
        e = result.estimate()
        reached = f"{result.reached} of {len(result.seeds)} seeds reached"
        shown = f"ratio {e.mean:.2f}" if e.mean is not None else "no ratio"
        texts.append(f"{result.arm} within {result.tolerance}: {reached}, {shown}")
    parts = []
    if params_held is not None:
        parts.append(f"parameters {HELD if params_held else NOT_HELD}")
    if compute_verdicts:
        same = len(set(compute_verdicts)) == 1
        parts.append(f"compute {compute_verdicts[0] if same else INCONCLUSIVE}")
    else:
        parts.append(f"compute {NOT_MEASURED}")
    return Finding(claim, "; ".join(parts), ". ".join(texts))


# ---- (d) ----------------------------------------------------------------------------------------------
def _grouping_factors(a: StudyAnalysis) -> Finding:
    claim = (
        "(d) pairing outcomes depend on task stability, architecture, complementarity, asymmetry and "
        "dataset quality"
    )
    evidence = [_stability(a), _architecture(a), *_transfer(a), _quality(a)]
    evidence = [e for e in evidence if e]
    helps_and_hurts = any(
        np.nanmax(m.values) > TOLERANCE and np.nanmin(m.values) < -TOLERANCE
        for m in a.transfer.values()
        if not np.all(np.isnan(m.values))
    )
    measured = any(not np.all(np.isnan(m.values)) for m in a.transfer.values())
    verdict = HELD if helps_and_hurts else INCONCLUSIVE if measured else NOT_MEASURED
    if not measured:
        evidence.append("no pair runs: complementarity and asymmetry need task_sets: [pairs]")
    return Finding(claim, verdict, ". ".join(evidence))


def _stability(a: StudyAnalysis) -> str:
    spread = [s for s in a.stability if s.std is not None]
    if not spread:
        return "stability: needs 2 seeds or more"
    arm = spread[0].arm  # the first arm with seeds: one line, not one per arm
    mine = sorted((s for s in spread if s.arm == arm), key=lambda s: -(s.std or 0))
    return f"stability (std over seeds, single-task, {arm}): " + ", ".join(
        f"{s.task} sd {s.std:.3f}" for s in mine
    )


def _architecture(a: StudyAnalysis) -> str:
    everything = a.runs.all_group
    candidates: list[tuple[Arm, dict[str, float]]] = []
    for arm in (arm for arm in a.arms if not arm.is_full and not arm.merged):  # trained shared modules
        scores = a.scores.get(arm, {}).get(everything, {})
        if means := {t: e.mean for t, e in scores.items() if e.mean is not None}:
            candidates.append((arm, means))
    # The first model's first arm against the first arm of another model trained with the same per-task
    # settings (lengths, batches): otherwise the difference would mix the architecture with the inputs.
    pair = next(
        (
            (first, second)
            for i, first in enumerate(candidates)
            for second in candidates[i + 1 :]
            if second[0].model != first[0].model and a.runs.same_task_settings(first[0], second[0])
        ),
        None,
    )
    if pair is None:
        return (
            "architecture: needs all-task runs of two models (e.g. an encoder and a decoder) trained with "
            "the same task settings"
        )
    (arm_1, first), (arm_2, second) = pair
    parts = [f"{t} {first[t]:.3f} vs {second[t]:.3f}" for t in first if t in second]
    return f"architecture (all tasks shared, {arm_1} vs {arm_2}): " + ", ".join(parts)


def _transfer(a: StudyAnalysis) -> list[str]:
    out = []
    for arm, m in a.transfer.items():
        if np.all(np.isnan(m.values)):
            continue
        pairs = m.as_dict()
        best = max(pairs.items(), key=lambda kv: kv[1])
        worst = min(pairs.items(), key=lambda kv: kv[1])
        asym = m.asymmetry
        i, j = np.unravel_index(np.nanargmax(np.abs(asym)), asym.shape)
        out.append(
            f"complementarity ({arm}): training with {best[0][1]} changes {best[0][0]} by "
            f"{best[1]:+.3f} (best), with {worst[0][1]} changes {worst[0][0]} by {worst[1]:+.3f} "
            "(worst); asymmetry: "
            f"{m.tasks[i]} gains {m.values[i, j]:+.3f} from {m.tasks[j]}, which gains "
            f"{m.values[j, i]:+.3f} back"
        )
    return out


def _quality(a: StudyAnalysis) -> str:
    parts = []
    for task, q in a.data_quality.items():
        if "error" in q:
            continue
        dupes = [
            v.get("duplicate_rate")
            for v in q.get("splits", {}).values()
            if v.get("duplicate_rate") is not None
        ]
        dup = f"duplicates up to {max(dupes):.3f}" if dupes else "duplicates -"
        leakage, conflicts = (q.get(k) if q.get(k) is not None else "-" for k in ("leakage", "conflicts"))
        parts.append(f"{task} {dup}, leakage {leakage}, conflicts {conflicts}")
    return "dataset quality: " + "; ".join(parts) if parts else ""


# ---- (e) ----------------------------------------------------------------------------------------------
def _prompting(a: StudyAnalysis) -> Finding:
    from mtpeft.report.prompting import prompted_runs

    claim = "(e) a small fine-tuned model beats general LLMs prompted directly"
    prompted = prompted_runs(a)
    if not prompted:
        return Finding(
            claim,
            NOT_MEASURED,
            "no prompting run in this report's store: `mtpeft prompt` into the same workspace adds one "
            "(docs/prompting.md has the measured table)",
        )
    verdicts, parts = [], []
    for task in a.tasks:
        metric = a.runs.primary.get(task)
        tuned = [
            e.mean
            for groups in a.scores.values()
            for g, by in groups.items()
            if (e := by.get(task)) and e.mean is not None
        ]
        asked = [
            r.details["tasks"][task]["metrics"].get(metric)
            for r in prompted
            if task in r.details.get("tasks", {})
        ]
        asked = [v for v in asked if v is not None]
        if not tuned or not asked:
            continue
        best_tuned, best_asked = max(tuned), max(asked)
        verdicts.append(best_tuned > best_asked)
        parts.append(f"{task}: fine-tuned {best_tuned:.3f} vs prompted {best_asked:.3f}")
    if not verdicts:
        return Finding(claim, NOT_MEASURED, "the prompting runs share no task with the fine-tuned runs")
    verdict = HELD if all(verdicts) else NOT_HELD if not any(verdicts) else "held on some tasks"
    return Finding(claim, verdict, "; ".join(parts) + " (best of each, primary metric)")


def _budget_used(a: StudyAnalysis) -> str:
    from mtpeft.report.build import flops

    trained = [v.record for v in a.runs.views]
    wall = sum(r.cost.get("wall_time_s", 0.0) or 0.0 for r in trained)
    work = sum(r.cost.get("train_flops_estimate", 0.0) or 0.0 for r in trained)
    models = sorted({v.arm.model for v in a.runs.views})
    return (
        f"Budget used: {len(trained)} fine-tuned runs on {', '.join(models)}, {wall / 3600:.2f} hours of "
        f"training wall time, {flops(work)} training FLOPs (estimate)."
    )
