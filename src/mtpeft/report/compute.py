"""Two report sections on training compute against quality (study/compute_to_quality.py computes them):

- "Compute to reach quality": per arm and seed, the compute the shared run needs to bring every task
  within the tolerance of its single-task best, against the N single runs' compute to reach theirs; the
  ratio beside the study's 85% claim, and what it would take here for that claim to hold.
- "Budget curve": the all-task run's validation and test score against its training compute (the curve
  its validations recorded), with each task's TF-IDF score as a line, and at the largest budget whether
  the fine-tuned model beats TF-IDF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtpeft.report import plots
from mtpeft.study.compute_to_quality import STUDY_CLAIMED_RATIO, ComputeToQuality, SeedRatio, budget_points

if TYPE_CHECKING:
    from mtpeft.report.build import Context, Section
    from mtpeft.study.analysis import StudyAnalysis
    from mtpeft.study.records import Arm

FLOPS = "train_flops_estimate"


def compute_section(a: StudyAnalysis, ctx: Context) -> Section:
    from mtpeft.report.build import Section, Table

    section = Section("Compute to reach quality")
    if not a.compute_to_quality:
        section.blocks.append(
            "Not measured: it needs, for some seed, the all-task run and every single-task run of an arm "
            "with validation curves (runs trained by this version record them at every validation)."
        )
        return section
    first = a.compute_to_quality[0]
    section.blocks.append(
        f"A run reaches quality at its first validation where its primary score is within {first.tolerance} "
        "of the single-task run's best (for the shared run: every task at once, against each task's own "
        "single-task best). Compute is cumulative training work at that validation: estimated FLOPs "
        "(machine-independent), tokens and measured wall time. shared / single below 1 means one shared "
        f"run gets there with less compute than the {len(first.tasks)} single runs together; the "
        f"published study's 'up to 85% less compute' is a ratio of {STUDY_CLAIMED_RATIO}. Resolution is the "
        "validation interval."
    )
    for result in a.compute_to_quality:
        section.blocks.append(
            Table(
                f"{result.arm}: shared run vs {len(result.tasks)} single runs, compute to reach quality",
                "Per seed. FLOPs are estimates; lower is better for compute and for the ratio; 'missed' "
                "lists tasks the shared run never brought within the tolerance of single-task quality "
                "(then there is no ratio).",
                [
                    "seed",
                    "single runs (sum), FLOPs",
                    "shared run, FLOPs",
                    "shared / single (FLOPs)",
                    "tokens",
                    "wall time",
                    "missed",
                ],  # fmt: skip
                [_seed_row(s) for s in result.seeds],
            )
        )
        section.blocks.append(verdict_sentence(result))
    if a.compute_to_quality_looser:
        section.blocks.append(
            Table(
                "The same ratio at looser tolerances",
                "A task counts as reached within the tolerance of its single-task best (absolute, primary "
                "metric). shared / single: mean over the seeds that reached, lower is better; the range is "
                "over those seeds.",
                ["model / method", "tolerance", "seeds reached", "shared / single (FLOPs)", "saving"],
                [_looser_row(r) for r in a.compute_to_quality_looser],
            )
        )
    return section


def _looser_row(result: ComputeToQuality) -> list[str]:
    e = result.estimate(FLOPS)
    ratio = "-" if e.mean is None else f"{e.mean:.2f}" + (f" [{e.lo:.2f}, {e.hi:.2f}]" if e.has_ci else "")
    saving = "-" if e.mean is None else f"{1 - e.mean:.0%}"
    return [str(result.arm), str(result.tolerance), f"{result.reached} of {len(result.seeds)}", ratio, saving]


def _seed_row(s: SeedRatio) -> list[str]:
    from mtpeft.report.build import flops, ratio

    single = sum(c.get(FLOPS, 0.0) for c in s.single.values())
    shared = s.shared.get(FLOPS) if s.shared else None
    return [
        str(s.seed),
        flops(single),
        flops(shared) if shared is not None else "not reached",
        ratio(s.ratio(FLOPS)),
        ratio(s.ratio("tokens")),
        ratio(s.ratio("wall_time_s")),
        ", ".join(s.missed) or "-",
    ]


def verdict_sentence(result: ComputeToQuality) -> str:
    """The measured ratio against the study's, and what it would take for the 85% to hold."""
    estimate = result.estimate(FLOPS)
    if estimate.mean is None:
        missed = sorted({t for s in result.seeds for t in s.missed})
        return (
            f"{result.arm}: the shared run never reached single-task quality on {', '.join(missed)} within "
            f"its budget (seeds {[s.seed for s in result.seeds]}), so it saves no compute to equal quality "
            "here. For the study's claim to hold it would first have to reach those tasks' single-task "
            f"scores (within {result.tolerance}), then do so in at most {STUDY_CLAIMED_RATIO:.0%} of the "
            "single runs' compute."
        )
    bounds = (
        f" [{estimate.lo:.2f}, {estimate.hi:.2f}] ({estimate.ci})" if estimate.has_ci else f" ({estimate.ci})"
    )
    saving = 1 - estimate.mean
    held = estimate.mean <= STUDY_CLAIMED_RATIO
    need = _steps_needed(result)
    tail = (
        "That meets the study's 85%."
        if held
        else f"The study's 85% would need a ratio of {STUDY_CLAIMED_RATIO}: the shared run reaching every "
        f"target within {need}."
    )
    return (
        f"{result.arm}: shared / single compute to reach quality {estimate.mean:.2f}{bounds}, a saving of "
        f"{saving:.0%} over {estimate.n_seeds} seed(s) that reached it ({result.reached} of "
        f"{len(result.seeds)}). {tail}"
    )


def _steps_needed(result: ComputeToQuality) -> str:
    """0.15 x the single runs' compute, in FLOPs and in the shared run's steps at its measured rate."""
    budgets = [STUDY_CLAIMED_RATIO * sum(c.get(FLOPS, 0.0) for c in s.single.values()) for s in result.seeds]
    budget = sum(budgets) / len(budgets)
    rates = [s.shared[FLOPS] / s.shared_step for s in result.seeds if s.shared and s.shared_step]
    if not rates:
        return f"{budget:.2e} FLOPs"
    return f"{budget:.2e} FLOPs, about {budget / (sum(rates) / len(rates)):.0f} shared steps"


# ---- budget curve -------------------------------------------------------------------------------------
def budget_section(a: StudyAnalysis, ctx: Context) -> Section:
    from mtpeft.report.build import Figure, Section, Table, _baseline, flops, num

    section = Section("Budget curve: score against training compute")
    everything = a.runs.all_group
    curves, tables, verdicts = [], [], []
    for arm in a.arms:
        points = budget_points(list(a.runs.runs(arm, everything).values()), a.runs.primary)
        if len(points) < 2:
            continue
        tfidf = {t: _baseline(a, t, "tfidf") for t in everything}
        for task in everything:
            xs = [p["compute"][FLOPS] for p in points]
            valid = [p["valid"].get(task, float("nan")) for p in points]
            tested = all(task in p["test"] for p in points)
            test = [p["test"][task] for p in points] if tested else None
            curves.append(plots.Curve(task, str(arm), xs, valid, test, tfidf[task]))
        rows = [
            [str(p["step"]), flops(p["compute"][FLOPS]), str(p["seeds"])]
            + [f"{num(p['test'].get(t))} / {num(p['valid'].get(t))}" for t in everything]
            for p in points
        ]
        tables.append(
            Table(
                f"{arm}: all {len(everything)} tasks in one module, by budget",
                "Each row a validation of the all-task run (mean over seeds at that step): its cumulative "
                "training FLOPs (estimate) and each task's primary score, test / valid (higher is better). "
                "The learning-rate schedule is the full run's, so an early row is that run part-way, not "
                "a run trained to that budget.",
                ["step", "FLOPs", "seeds", *(f"{t} test / valid" for t in everything)],
                rows,
            )
        )
        verdicts.append(_beats_tfidf(arm, points[-1], tfidf))
    if not curves:
        section.blocks.append(
            "No curve: it needs an all-task run with at least two validations recorded (curve_test: true "
            "adds the test score at each)."
        )
        return section
    section.blocks.append(
        Figure(
            "budget-curve",
            "lines",
            "Score against training compute, all tasks in one module",
            "x: cumulative training FLOPs (estimate); y: primary score, higher is better. Dashed: valid, "
            "solid: test (runs with curve_test), dotted grey: TF-IDF on the test split.",
            plots.budget_curves(curves, x_label="training FLOPs (estimate)", title="Budget curve"),
        )
    )
    section.blocks += [*tables, *verdicts]
    return section


def _beats_tfidf(arm: Arm, last: dict, tfidf: dict[str, float | None]) -> str:
    parts = []
    for task, baseline in tfidf.items():
        score = last["test"].get(task, last["valid"].get(task))
        split = "test" if task in last["test"] else "valid"
        if baseline is None or score is None:
            parts.append(f"{task}: no TF-IDF score")
            continue
        word = "beats" if score > baseline else "does not beat"
        parts.append(f"{task} {word} TF-IDF ({score:.3f} {split} vs {baseline:.3f})")
    return f"{arm}, at the largest budget (step {last['step']}): " + "; ".join(parts) + "."
