"""`mtpeft report`: the study report, rebuilt from the store every time (Markdown, HTML, CSV, PNGs).

The report is a small document model (sections of paragraphs, tables and figures) that the Markdown and
HTML renderers turn into text; every table carries a caption saying what its numbers are and which way is
better. Nothing is cached: change a stored metric and the next report shows it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mtpeft.errors import ConfigError, InputError
from mtpeft.layout import RUNS_DIR, per_example_path, store_path
from mtpeft.outputs import atomic_output, refuse_overwriting_inputs, write_bytes, write_text
from mtpeft.paths import safe_filename
from mtpeft.report import plots
from mtpeft.report.cheap_signals import cheap_signals_section
from mtpeft.report.compute import budget_section, compute_section
from mtpeft.report.conflict import conflict_section
from mtpeft.report.findings import findings_section
from mtpeft.report.other_data import other_data_section
from mtpeft.report.prompting import side_by_side
from mtpeft.store import EvaluationRecord, RunRecord, RunStore
from mtpeft.store.sqlite import PROMPTING, TFIDF_SKIPPED
from mtpeft.study.analysis import Comparison, CostComparison, StudyAnalysis, analyse
from mtpeft.study.grouping import Plan, Recommendation
from mtpeft.study.merged_arms import MergedCost, MergedTask
from mtpeft.study.records import Arm
from mtpeft.study.stats import Estimate, score_estimate

BASELINES = ("majority", "tfidf")
OPTIONAL_BASELINES = ("copy",)  # generation tasks only (the input as the output): a column where present


def baselines_shown(a: StudyAnalysis) -> list[str]:
    present = {name for v in a.runs.views for by_name in v.record.baselines.values() for name in by_name}
    return [*BASELINES, *(b for b in OPTIONAL_BASELINES if b in present)]


# ---- document model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    title: str
    caption: str  # what the numbers are, and which direction is better
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    name: str  # file stem, unique in the report
    kind: str  # "heatmap" | "scatter" | "bars"
    title: str
    caption: str
    png: bytes


Block = str | Table | Figure  # a str is a paragraph


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    csv: Path
    figures: list[Path]


@dataclass(frozen=True)
class Context:
    store: Path
    generated: str
    evaluations: tuple[EvaluationRecord, ...] = ()  # of the report's runs, on other data


# ---- number formatting -----------------------------------------------------------------------------
def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: float | None, digits: int = 3) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f}"


def signed(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:+.3f}"


def interval(e: Estimate) -> str:
    return f"[{e.lo:+.3f}, {e.hi:+.3f}]" if e.has_ci else "-"


def score_cell(e: Estimate | None) -> str:
    if e is None or e.mean is None:
        return "-"
    return f"{e.mean:.3f} [{e.lo:.3f}, {e.hi:.3f}]" if e.has_ci else f"{e.mean:.3f}"


def human_bytes(n: float | None) -> str:
    if _missing(n):
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def flops(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:.2e}"


def seconds(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:.1f} s"


def ratio(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:.2f}x"


def direction_note(metrics: list[str]) -> str:
    from mtpeft.evaluation.metrics import metric_direction

    lower = sorted({m for m in metrics if _direction(metric_direction, m) != "higher"})
    if not lower:
        return "Higher is better for every score."
    return f"Higher is better, except for {', '.join(lower)} (lower is better)."


def _direction(lookup: Callable[[str], str], metric: str) -> str:
    try:
        return lookup(metric)
    except Exception:  # a metric this version does not know: say nothing wrong about it
        return "unknown"


# ---- sections --------------------------------------------------------------------------------------
def _metrics_used(a: StudyAnalysis) -> list[str]:
    return [a.runs.primary[t] for t in a.tasks if t in a.runs.primary]


def _key(record: RunRecord) -> str:
    return record.config.get("key", record.config_hash)


def overview(a: StudyAnalysis, ctx: Context) -> Section:
    records = a.runs.records
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    primary = ", ".join(f"{t}: {a.runs.primary.get(t, '?')}" for t in a.tasks)
    blocks: list[Block] = [
        f"Store: {ctx.store}. Generated {ctx.generated}; every number below was recomputed from the store "
        "when this report was built.",
        f"Runs: {len(records)} ({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}). "
        f"Arms (model / method): {', '.join(map(str, a.arms)) or 'none finished'}.",
        f"Tasks and their primary metric on the {a.split} split: {primary or 'none'}. "
        + direction_note(_metrics_used(a)),
        "Means are over seeds. 95% confidence intervals: a t-interval over seeds where there are 3 or more; "
        "else a (paired) bootstrap over the test examples of the runs' per-example predictions when both "
        "runs scored the same examples; else none, and the table says why.",
    ]
    done = {_key(r) for r in records if r.status == "finished"}
    unfinished = [r for r in records if r.status != "finished" and _key(r) not in done]
    retried = sum(r.status != "finished" and _key(r) in done for r in records)
    if retried:
        blocks.append(
            f"{retried} failed or interrupted attempt(s) finished on a later try; only those count."
        )
    if unfinished:
        blocks.append(
            Table(
                "Runs that did not finish",
                "Not used in any number of this report. Re-run `mtpeft study` to resume or retry them.",
                ["run", "status", "tasks", "seed", "error"],
                [
                    [r.name, r.status, ", ".join(r.tasks), str(r.seed), (r.error or "")[:160]]
                    for r in unfinished
                ],
            )
        )
    return Section("Overview", blocks)


def _baseline(a: StudyAnalysis, task: str, name: str) -> float | None:
    """The newest run's baseline: older runs may have scored it with older baseline code or data."""
    metric = a.runs.primary.get(task)
    for view in reversed(a.runs.views):
        value = view.record.baselines.get(task, {}).get(name, {}).get(metric)
        if value is not None:
            return value
    return None


def _best_other_group(a: StudyAnalysis, arm: Arm, task: str) -> tuple[str, Estimate | None]:
    best: tuple[str, Estimate | None] = ("-", None)
    for group, by_task in a.scores.get(arm, {}).items():
        e = by_task.get(task)
        if len(group) < 2 or group == a.runs.all_group or e is None or e.mean is None:
            continue
        if best[1] is None or e.mean > best[1].mean:
            best = ("+".join(t for t in group if t != task), e)
    return best


def scores_section(a: StudyAnalysis, ctx: Context) -> Section:
    section = Section("Scores per task")
    bars = []
    for arm in a.arms:
        groups = a.scores.get(arm, {})
        rows = []
        for task in a.tasks:
            single = groups.get((task,), {}).get(task)
            multi = groups.get(a.runs.all_group, {}).get(task)
            partner, other = _best_other_group(a, arm, task)
            rows.append(
                [task, a.runs.primary.get(task, "-"), score_cell(single), score_cell(multi)]
                + [f"{score_cell(other)} (with {partner})" if other else "-"]
                + [num(_baseline(a, task, b)) for b in baselines_shown(a)]
            )
            for setting, e in (("single", single), ("all tasks", multi)):
                if e is not None and e.mean is not None:
                    bars.append(plots.Bar(str(arm), setting, task, e.mean, e.lo, e.hi))
        section.blocks.append(
            Table(
                f"{arm}: {a.split} scores",
                f"Primary {a.split} metric per task, mean over seeds [95% CI]. single: one module per task; "
                "all tasks: one shared module; best other grouping: the best score of the task in any other "
                "multi-task run. Baselines are trained on the same train split. "
                + direction_note(_metrics_used(a)),
                ["task", "metric", "single", "all tasks", "best other grouping", *baselines_shown(a)],
                rows,
            )
        )
    if bars:
        section.blocks.insert(
            0,
            Figure(
                "scores",
                "bars",
                "Per-task scores: one module per task vs one shared module",
                "Bars: primary test score, mean over seeds; whiskers: 95% CI where there is one. "
                "Higher is better.",
                plots.task_bars(bars, title=f"{a.split} score per task", score_label="primary metric"),
            ),
        )
    combined = side_by_side(a)  # prompted LLMs beside the fine-tuned runs, where there are any
    if combined is not None:
        section.blocks.append(combined)
    return section


OOD_TITLE = "Out-of-distribution evaluations"


def _per_example(record: RunRecord, ctx: Context, split: str, task: str) -> dict[str, list] | None:
    """A run's per-example predictions; its stored run_dir may be relative to where it trained, but a run
    always sits in <workspace>/runs/ beside the store, so that place is tried too."""
    stored = Path(record.run_dir)
    for run_dir in (stored, ctx.store.parent / RUNS_DIR / stored.name):
        try:
            return json.loads(per_example_path(run_dir, split, task).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def _in_distribution(
    a: StudyAnalysis, ctx: Context, record: RunRecord, task: str, metric: str
) -> Estimate | None:
    """The run's own score on its split, with the bootstrap interval of its per-example file if present."""
    value = record.metrics.get(a.split, {}).get(task, {}).get(metric)
    if value is None:
        return None
    return score_estimate({record.seed: value}, metric, lambda _: _per_example(record, ctx, a.split, task))


def _ood_row(a: StudyAnalysis, ctx: Context, record: RunRecord, e: EvaluationRecord) -> list[str]:
    own = _in_distribution(a, ctx, record, e.task, e.metric)
    ood = Estimate(e.score, *(e.interval or (None, None)))
    shift = e.score - own.mean if own is not None and own.mean is not None else None
    subset = "" if e.max_examples is None else " (seeded subset)"
    tfidf = e.baselines.get("tfidf", {}).get(e.metric)
    return [
        f"{record.name} ({record.run_id[:8]})",
        e.task,
        e.metric,
        score_cell(own),
        e.data_path,
        e.split,
        f"{e.n_examples}{subset}",
        score_cell(ood),
        signed(shift),
        num(e.baselines.get("majority", {}).get(e.metric)),
        "skipped" if any(note.startswith(TFIDF_SKIPPED) for note in e.notes) else num(tfidf),
    ]


def ood_section(a: StudyAnalysis, ctx: Context) -> Section:
    """Each run's in-distribution score beside its scores on other data (`mtpeft evaluate --data`)."""
    by_id = {r.run_id: r for r in a.runs.records}
    evaluations = [e for e in ctx.evaluations if e.run_id in by_id]
    if not evaluations:
        return Section(
            OOD_TITLE,
            [
                "No run of this report was evaluated on other data. `mtpeft evaluate RUN_DIR --data "
                "TASK=PATH` scores a run on any folder its task's format reads (a test file alone will do) "
                "and records it here."
            ],
        )
    table = Table(
        "In-distribution vs other data, per run and task",
        f"Primary metric; higher is better. in-distribution: the run's own {a.split} split (the seeded "
        "subset it was scored on), [95% bootstrap CI] where its per-example predictions are readable. "
        "other data: the evaluated split of that folder (all of it unless a subset is shown), [95% bootstrap "
        "CI over its examples]; shift = other - in-distribution. majority: the most frequent label of that "
        "data itself, a reference for its imbalance that peeks at the answers, not a model; tfidf: trained "
        "on the run's own train data, scored on that data.",
        [
            "run",
            "task",
            "metric",
            f"in-distribution ({a.split})",
            "data",
            "split",
            "n",
            "score on that data",
            "shift",
            "majority (that data)",
            "tfidf (run's train)",
        ],
        [_ood_row(a, ctx, by_id[e.run_id], e) for e in evaluations],
    )
    notes = [
        f"{by_id[e.run_id].name}, {e.task} on {e.data_path}: {note}" for e in evaluations for note in e.notes
    ]
    return Section(OOD_TITLE, [table, *notes])


def _comparison_rows(comparisons: list[Comparison], with_model: bool) -> list[list[str]]:
    rows = []
    for c in comparisons:
        head = [c.arm.model, c.arm.method] if with_model else [str(c.arm)]
        rows.append(
            head
            + [c.task, c.metric, num(c.right.mean), num(c.left.mean), signed(c.diff.mean)]
            + [interval(c.diff), c.diff.ci]
        )
    return rows


def single_vs_multi_section(a: StudyAnalysis, ctx: Context) -> Section:
    if not a.single_vs_multi:
        return Section(
            "Single-task vs multi-task",
            [
                "No arm has both single-task runs and a run of all tasks: "
                "run the `single` and `all` task sets."
            ],
        )
    table = Table(
        "Shared module (all tasks) minus one module per task",
        "Difference of the primary test metric, all-task run minus single-task run, mean over seeds, "
        "with its 95% CI and how the CI was made. Positive: sharing helped the task. "
        + direction_note(_metrics_used(a)),
        ["model / method", "task", "metric", "single", "all tasks", "all - single", "95% CI", "CI from"],
        _comparison_rows(a.single_vs_multi, with_model=False),
    )
    return Section("Single-task vs multi-task", [table])


def peft_vs_full_section(a: StudyAnalysis, ctx: Context) -> Section:
    if not a.peft_vs_full:
        return Section(
            "PEFT vs full fine-tuning (multi-task)",
            [
                "No comparison: the study has no full fine-tuning run of all tasks "
                "beside a PEFT one (method `full`)."
            ],
        )
    table = Table(
        "Shared PEFT module minus full multi-task fine-tuning",
        "Both trained on all tasks at once. Difference of the primary test metric, PEFT minus full, "
        "mean over seeds with 95% CI. Positive: the PEFT module beat full fine-tuning. "
        + direction_note(_metrics_used(a)),
        ["model", "method", "task", "metric", "full", "PEFT", "PEFT - full", "95% CI", "CI from"],
        _comparison_rows(a.peft_vs_full, with_model=True),
    )
    return Section("PEFT vs full fine-tuning (multi-task)", [table])


def _matrix_rows(tasks: list[str], values: np.ndarray) -> list[list[str]]:
    return [
        [t] + [("" if i == j else signed(values[i, j])) for j in range(len(tasks))]
        for i, t in enumerate(tasks)
    ]


def transfer_section(a: StudyAnalysis, ctx: Context) -> Section:
    section = Section("Task transfer (pairs)")
    for arm, matrix in a.transfer.items():
        if not np.isfinite(matrix.values).any():
            continue
        section.blocks.append(
            Figure(
                f"transfer-{_slug(arm)}",
                "heatmap",
                f"{arm}: transfer matrix",
                "Cell (i, j): primary test score of task i when co-trained with task j alone, minus its "
                "single-task score (mean over seeds). Higher (blue) is better: j helps i. n/a: pair not run. "
                f"Colours span at least ±{plots.MIN_COLOUR_RANGE:g}, so differences of a few thousandths "
                "stay pale.",
                plots.transfer_heatmap(
                    matrix.tasks, matrix.values, f"{arm}: T[i][j] = score(i with j) - score(i)"
                ),
            )
        )
        section.blocks.append(
            Table(
                f"{arm}: transfer T[i][j]",
                "Row task i, column task j: score of i co-trained with j minus i alone. "
                "Higher is better for i.",
                ["task i \\ with j", *matrix.tasks],
                _matrix_rows(matrix.tasks, matrix.values),
            )
        )
        section.blocks.append(
            Table(
                f"{arm}: asymmetry T[i][j] - T[j][i]",
                "Positive: the pairing helps (or hurts less) row task i than it helps column task j. "
                "Large values mark lopsided pairs (one task gains at the other's expense). "
                "Neither direction is better.",
                ["task i \\ task j", *matrix.tasks],
                _matrix_rows(matrix.tasks, matrix.asymmetry),
            )
        )
    if not section.blocks:
        section.blocks.append("No pair runs: run the `pairs` task set to measure transfer between tasks.")
    section.blocks.sort(key=lambda b: not isinstance(b, Figure))  # heatmaps side by side, tables below
    return section


def stability_section(a: StudyAnalysis, ctx: Context) -> Section:
    rows = [
        [str(s.arm), s.task, s.metric, str(s.n_seeds), num(s.mean), num(s.std, 4)]
        + [num(s.grouped_min), num(s.grouped_max), str(s.groups)]
        for s in a.stability
    ]
    table = Table(
        "Stability",
        "std over seeds of the single-task score (needs 2 seeds or more): lower is better (steadier). "
        "min / max grouped: the task's mean score over every multi-task run it was part of (higher is "
        "better; a wide range means the outcome depends on the partners).",
        [
            "model / method",
            "task",
            "metric",
            "seeds",
            "single mean",
            "std over seeds",
            "min grouped",
            "max grouped",
        ]
        + ["groupings"],
        rows,
    )
    return Section("Stability", [table])


def _plan_row(name: str, plan: Plan, rec: Recommendation) -> list[str]:
    def versus(reference: Plan) -> str:
        return " / ".join(ratio(_relative(plan, reference, attr)) for attr in ("flops", "wall_s"))

    return [
        name,
        str(plan.modules),
        num(plan.mean_score) if plan.known else "not measured",
        flops(plan.total("flops")),
        seconds(plan.total("wall_s")),
        versus(rec.all_single),
        versus(rec.all_in_one),
    ]


def _relative(plan: Plan, reference: Plan, attr: str) -> float | None:
    mine, ref = plan.total(attr), reference.total(attr)
    return None if mine is None or not ref else mine / ref


def grouping_section(a: StudyAnalysis, ctx: Context) -> Section:
    section = Section("Grouping recommendation")
    section.blocks.append(
        "Which tasks should share a module: the partition of the tasks into shared modules with the highest "
        "mean predicted primary score. A group's scores are measured when exactly that group was run "
        "(mean over seeds); otherwise estimated as the single-task score plus the mean pairwise transfer "
        "from the other tasks of the group (this assumes transfers add up: confirm estimated groups by "
        "running them). Ties go to fewer modules. Compute of a group not run is the sum of its tasks' "
        "single-task compute."
    )
    for arm, rec in a.grouping.items():
        groups = [
            [
                f"module {k + 1}",
                " + ".join(g.tasks),
                ", ".join(f"{t} {num(v)}" for t, v in g.scores.items()),
                g.source,
                flops(g.cost.flops),
                seconds(g.cost.wall_s),
                g.cost_source,
            ]
            for k, g in enumerate(rec.best.groups)
        ]
        section.blocks.append(
            Table(
                f"{arm}: recommended modules ({rec.search})",
                "Predicted primary test score per task (higher is better) and the group's training compute "
                "(FLOPs estimated from parameters x tokens, and wall time; lower is better).",
                [
                    "module",
                    "tasks",
                    "predicted score",
                    "score from",
                    "train FLOPs",
                    "wall time",
                    "compute from",
                ],
                groups,
            )
        )
        section.blocks.append(
            Table(
                f"{arm}: recommended plan against the two extremes",
                "Mean predicted score over tasks: higher is better. Compute: lower is better; ratios are "
                "this plan's FLOPs / wall time over the reference plan's (below 1x: cheaper).",
                [
                    "plan",
                    "modules",
                    "mean score",
                    "train FLOPs",
                    "wall time",
                    "vs all single (FLOPs / wall)",
                    "vs all in one (FLOPs / wall)",
                ],
                [
                    _plan_row("recommended", rec.best, rec),
                    _plan_row("one module per task", rec.all_single, rec),
                    _plan_row("one module for all", rec.all_in_one, rec),
                ],
            )
        )
        section.blocks.extend(rec.notes)
        noise = _within_noise(a, arm, rec)
        if noise:
            section.blocks.append(noise)
    if not a.grouping:
        section.blocks.append("No recommendation: it needs single-task scores of every task.")
    return section


def _within_noise(a: StudyAnalysis, arm: Arm, rec: Recommendation) -> str | None:
    """A caution when the plans' mean scores differ by less than the measured noise of one difference."""
    half_widths = [(c.diff.hi - c.diff.lo) / 2 for c in a.single_vs_multi if c.arm == arm and c.diff.has_ci]
    if not half_widths:
        return None
    noise = float(np.median(half_widths))
    means = [p.mean_score for p in (rec.best, rec.all_single, rec.all_in_one) if p.known]
    spread = max(means) - min(means)
    if spread >= noise:
        return None
    return (
        f"Caution ({arm}): the three plans' mean scores differ by at most {spread:.3f}, less than the "
        f"median 95% CI half-width ({noise:.3f}) of the all-task minus single-task differences above: at "
        "this data size the choice is within noise. More seeds or larger test sets would separate them."
    )


def _cost_rows(c: CostComparison) -> list[list[str]]:
    spec = [
        ("shared-module params", "shared_params", lambda v: f"{v:,.0f}"),
        ("head params", "head_params", lambda v: f"{v:,.0f}"),
        ("trainable params (all)", "trainable_params", lambda v: f"{v:,.0f}"),
        ("stored bytes", "stored_bytes", human_bytes),
        ("train tokens", "tokens", lambda v: f"{v:,.0f}"),
        ("train FLOPs (est.)", "train_flops_estimate", flops),
        ("train wall time", "wall_time_s", seconds),
        ("peak memory", "peak_memory_bytes", human_bytes),
    ]
    rows = []
    for label, key, fmt in spec:
        r = c.ratio(key)
        saving = "-" if r is None else f"{round(100 * (1 - r)):d}%"
        rows.append([label, fmt(c.single[key]), fmt(c.multi[key]), ratio(r), saving])
    return rows


def _mean_score(a: StudyAnalysis, arm: Arm, *, shared: bool) -> float | None:
    """Mean over tasks of the all-task run's scores (shared) or of the single-task scores."""
    by_group = a.scores.get(arm, {})
    values = [by_group.get(a.runs.all_group if shared else (t,), {}).get(t) for t in a.tasks]
    means = [e.mean for e in values if e is not None and e.mean is not None]
    return float(np.mean(means)) if means and len(means) == len(a.tasks) else None


SCATTER_AXES = {
    "train_flops_estimate": "train FLOPs (estimate)",
    "wall_time_s": "train wall time (s)",
    "trainable_params": "trainable parameters",
}


def _plan_points(a: StudyAnalysis, c: CostComparison) -> list[plots.Point]:
    """One module per task, one for all, and the recommended plan (predicted) of an arm."""
    points = []
    for label, cost, score in (
        ("one per task", c.single, _mean_score(a, c.arm, shared=False)),
        ("all shared", c.multi, _mean_score(a, c.arm, shared=True)),
    ):
        if score is not None:
            points.append(plots.Point(label, str(c.arm), {k: cost[k] for k in SCATTER_AXES}, score))
    rec = a.grouping.get(c.arm)
    if rec and rec.best.modules not in (1, len(a.tasks)):
        # Parameters: one shared module per group plus the same heads.
        params = rec.best.modules * c.multi["shared_params"] + c.multi["head_params"]
        costs = {"train_flops_estimate": rec.best.total("flops"), "wall_time_s": rec.best.total("wall_s")}
        costs = {k: v for k, v in costs.items() if v} | {"trainable_params": params}
        points.append(plots.Point("recommended (pred.)", str(c.arm), costs, rec.best.mean_score))
    return points


def _headline_ratios(c: CostComparison) -> str:
    """The two numbers the published claims are about, as single / multi (N means N times fewer)."""

    def inverse(key: str) -> str:
        r = c.ratio(key)
        return f"{1 / r:.2f}x" if r else "-"

    return (
        f"{c.arm}, single / multi: shared-module parameters {inverse('shared_params')} (the task count is "
        f"{c.n_tasks}: sharing divides them by it); training compute {inverse('train_flops_estimate')} "
        f"in estimated FLOPs, {inverse('wall_time_s')} in measured wall time (above 1x: the shared module "
        "is cheaper)."
    )


def cost_section(a: StudyAnalysis, ctx: Context) -> Section:
    section = Section("Cost")
    points = []
    for c in a.costs:
        section.blocks.append(
            Table(
                f"{c.arm}: {c.n_tasks} single-task runs vs one multi-task run",
                f"Measured on the machine that trained (mean over seeds {c.seeds}); FLOPs are estimates from "
                "parameters x tokens. Lower is better for every row. multi / single below 1x and a positive "
                "saving mean the shared module is cheaper.",
                ["quantity", f"{c.n_tasks} single runs (sum)", "1 multi run", "multi / single", "saving"],
                _cost_rows(c),
            )
        )
        section.blocks.append(_headline_ratios(c))
        points += _plan_points(a, c)
    if points:
        section.blocks.append(
            Figure(
                "score-vs-cost",
                "scatter",
                "Mean score against cost",
                "y: mean over tasks of the primary test score (higher is better); x: training FLOPs "
                "(estimated), training wall time (measured) and trainable parameters of all modules and "
                "heads (what is stored); lower is better. Up and to the left is better.",
                plots.score_cost_scatter(
                    points, cost_axes=SCATTER_AXES, score_label="mean primary score over tasks"
                ),
            )
        )
    if not section.blocks:
        section.blocks.append(
            "No cost comparison: it needs, for some seed, every single-task run and the all-task run."
        )
    return section


MERGED_TITLE = "Merged modules (no training)"


def _merged_row(m: MergedTask) -> list[str]:
    against = [m.versus_single, m.versus_multi, m.versus_full]
    first = next(c for c in against if c is not None)  # merged_tasks keeps rows with one at least
    return (
        [str(m.arm), m.task, first.metric]
        + [num(c.right.mean) if c else "-" for c in against]
        + [num(first.left.mean)]
        + [f"{signed(c.diff.mean)} {interval(c.diff)}" if c else "-" for c in against]
    )


def _merged_cost_rows(c: MergedCost) -> list[list[str]]:
    spec = [
        ("train FLOPs (est.)", "train_flops_estimate", flops),
        ("train tokens", "tokens", lambda v: f"{v:,.0f}"),
        ("wall time (training; the merge)", "wall_time_s", seconds),
        ("shared-module params", "shared_params", lambda v: f"{v:,.0f}"),
        ("stored bytes", "stored_bytes", human_bytes),
    ]
    rows = []
    for label, key, fmt in spec:
        total = (
            c.singles[key] + c.merge[key]
            if key in ("train_flops_estimate", "tokens", "wall_time_s")
            else None
        )
        rows.append(
            [
                label,
                fmt(c.singles[key]),
                fmt(c.merge[key]),
                fmt(total) if total is not None else fmt(c.merge[key]),
                fmt(c.multi[key]) if c.multi else "-",
            ]
        )
    return rows


def merged_section(a: StudyAnalysis, ctx: Context) -> Section | None:
    """Merged arms (`mtpeft merge`, a grid's `merges`) beside the single and multi-task runs of their
    source arm; left out where the study has none."""
    if not a.merged and not a.merged_costs:
        return None
    section = Section(MERGED_TITLE)
    section.blocks.append(
        "A merged arm is one shared module made from its source arm's single-task modules by peft's "
        "add_weighted_adapter (no training step; each task keeps the head it was trained with). Its "
        "training cost is its single-task runs' cost: merging adds none."
    )
    if a.merged:
        section.blocks.append(
            Table(
                "Merged minus single-task and minus multi-task",
                "Primary test metric, mean over seeds; the differences with their 95% CI. single: the "
                "source arm's single-task run of the task (what was merged); all tasks: the source arm's "
                "one module trained on all tasks; full: full fine-tuning of all tasks on the same model "
                "(same task settings). " + direction_note(_metrics_used(a)),
                ["merged arm", "task", "metric", "single", "all tasks", "full", "merged"]
                + ["merged - single", "merged - all tasks", "merged - full"],
                [_merged_row(m) for m in a.merged],
            )
        )
    for c in a.merged_costs:
        section.blocks.append(
            Table(
                f"{c.arm}: cost against {c.source}",
                f"Mean over seeds {c.seeds}. The merged arm needs its single-task runs (trained) and the "
                "merge (no training: FLOPs and tokens 0); its total is their sum. Lower is better.",
                ["quantity", "single runs (sum)", "merge", "merged arm in total", "1 multi-task run"],
                _merged_cost_rows(c),
            )
        )
    return section


def _split_numbers(summary: dict, key: str) -> str:
    splits = summary.get("splits", {})
    return " / ".join(f"{s}: {_plain(v.get(key))}" for s, v in splits.items() if key in v) or "-"


def _plain(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def data_quality_section(a: StudyAnalysis, ctx: Context) -> Section:
    if not a.data_quality:
        return Section("Dataset quality", ["No dataset-quality summaries were stored with these runs."])
    rows = [
        [
            task,
            _split_numbers(q, "count"),
            _split_numbers(q, "positive_rate"),
            _split_numbers(q, "duplicate_rate"),
            _plain(q.get("leakage", "-")),
            _plain(q.get("conflicts", "-")),
            _split_numbers(q, "p95_len"),
        ]
        for task, q in a.data_quality.items()
        if "error" not in q
    ]
    table = Table(
        "Dataset quality (as stored with the runs)",
        "Examples per split; positive-class rate (far from 0.5: accuracy is easy to inflate); duplicate rate "
        "within a split and leakage (test examples also in train) and label conflicts: lower is better; "
        "p95 input length in tokens (beyond max_length is truncated).",
        ["task", "examples", "positive rate", "duplicate rate", "leakage", "conflicts", "p95 length"],
        rows,
    )
    return Section("Dataset quality", [table])


def runs_section(a: StudyAnalysis, ctx: Context) -> Section:
    rows = []
    for r in a.runs.records:
        scores = r.metrics.get(a.split, {})
        primary = ", ".join(
            f"{t} {num(scores.get(t, {}).get(a.runs.primary.get(t, '')))}" for t in r.tasks if t in scores
        )
        rows.append(
            [r.run_id[:8], r.name, r.status, r.model, r.method, str(r.seed), primary or "-"]
            + [seconds(r.cost.get("wall_time_s")) if r.cost else "-"]
        )
    table = Table(
        "Every run of the study",
        f"Primary {a.split} score per task (higher is better) and training wall time (lower is better). "
        "runs.csv beside this report has every metric of every run.",
        ["run", "name", "status", "model", "method", "seed", f"{a.split} (primary)", "wall time"],
        rows,
    )
    return Section("Runs", [table])


# Registry: the report's sections, in order.
SECTIONS: list[Callable[[StudyAnalysis, Context], Section | None]] = [
    overview,
    findings_section,
    scores_section,
    ood_section,
    other_data_section,
    single_vs_multi_section,
    peft_vs_full_section,
    transfer_section,
    conflict_section,
    stability_section,
    grouping_section,
    cheap_signals_section,
    cost_section,
    merged_section,
    compute_section,
    budget_section,
    data_quality_section,
    runs_section,
]


def _slug(arm: Arm) -> str:
    """The arm in a figure's file name: model names are hub ids or folders (`org/name`, `../m`)."""
    return safe_filename(f"{arm.model}-{arm.method}")


def build_document(a: StudyAnalysis, ctx: Context) -> Document:
    title = f"Study report: {a.study}" if a.study else "Report: all runs in the store"
    # A section that has nothing to show (no gradient-conflict measurements) returns None and is left out.
    return Document(title, [s for make in SECTIONS if (s := make(a, ctx)) is not None])


# ---- inputs and outputs ----------------------------------------------------------------------------
def load_records(workspace: Path, study: str | None) -> tuple[list[RunRecord], str | None, Path]:
    path = store_path(workspace)
    if not path.exists():
        raise ConfigError(
            f"no results store at {path}; run `mtpeft study` or `mtpeft train` first", field="workspace"
        )
    store = RunStore(path)
    everything = store.list_runs()
    studies = sorted({r.study for r in everything if r.study})
    if study is None and len(studies) > 1:
        raise ConfigError(f"{path} holds several studies ({', '.join(studies)}); choose one with --study")
    study = study or (studies[0] if studies else None)
    # Prompting runs outside any study are baselines of every study of the workspace.
    records = [r for r in everything if study is None or r.study == study or _unfiled_prompting(r)]
    if not records:
        known = ", ".join(studies) or "none"
        raise ConfigError(f"no runs of study '{study}' in {path}; studies there: {known}", field="study")
    return records, study, path


def _unfiled_prompting(record: RunRecord) -> bool:
    return record.mode == PROMPTING and record.study is None


def write_csv(records: list[RunRecord], path: Path) -> None:
    """One row per run x split x task x metric (a run with no metrics still gets one row)."""
    head = ["run_id", "name", "study", "status", "model", "method", "method_options", "tasks", "seed"]
    with atomic_output(path, newline="") as out:  # the csv module writes its own line ends
        writer = csv.writer(out)
        writer.writerow([*head, "split", "task", "metric", "value"])
        for r in records:
            base = [r.run_id, r.name, r.study or "", r.status, r.model, r.method]
            base += [
                json.dumps(r.config.get("method_options", {}), sort_keys=True),
                "+".join(r.tasks),
                r.seed,
            ]
            cells = [
                [split, task, metric, value]
                for split, by_task in r.metrics.items()
                for task, by_metric in by_task.items()
                for metric, value in by_metric.items()
            ]
            for cell in cells or [["", "", "", ""]]:
                writer.writerow(base + cell)


def build_report(
    workspace: Path, out_dir: Path, *, study: str | None = None, split: str = "test"
) -> ReportFiles:
    from mtpeft.report.html import render_html
    from mtpeft.report.markdown import render_markdown

    _check_out_dir(out_dir)  # before the analysis: a typo fails at once
    records, study, store_path = load_records(Path(workspace), study)
    analysis = analyse(records, study=study, split=split)
    evaluations = tuple(RunStore(store_path).list_evaluations([r.run_id for r in records]))
    ctx = Context(store_path, datetime.now(timezone.utc).isoformat(timespec="seconds"), evaluations)
    document = build_document(analysis, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(exist_ok=True)
    figures = []
    markdown, html, csv_path = out_dir / "report.md", out_dir / "report.html", out_dir / "runs.csv"
    drawn = document.figures()
    written = [figure_dir / f"{figure.name}.png" for figure in drawn]
    for path in [markdown, html, csv_path, *written]:  # e.g. a report.html linked to the store
        refuse_overwriting_inputs(path, [store_path])
    # Each file is replaced whole: a crash part-way never leaves a half-written file, old or new.
    for figure, path in zip(drawn, written, strict=True):
        write_bytes(path, figure.png)
        figures.append(path)
    write_text(markdown, render_markdown(document, figure_dir="figures"))
    write_text(html, render_html(document))
    write_csv(records, csv_path)
    return ReportFiles(markdown, html, csv_path, figures)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; the report needs a folder (it writes several files)")
