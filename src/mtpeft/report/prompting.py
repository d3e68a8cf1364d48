"""Prompted LLMs (`mtpeft prompt`) in the report: one results table per task, every method side by side.

Rows per task: each fine-tuned arm (model / method, `full` included) trained on that task alone and on
all tasks, each prompting run (model, shots, answer mode), and the TF-IDF and majority baselines. Only
built when the store holds a finished prompting run; the report is otherwise unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtpeft.store.sqlite import PROMPTING
from mtpeft.study.stats import Estimate

if TYPE_CHECKING:
    from mtpeft.report.build import Table
    from mtpeft.store import RunRecord
    from mtpeft.study.analysis import StudyAnalysis
    from mtpeft.study.records import Arm

COLUMNS = [
    "task",
    "metric",
    "system",
    "setting",
    "score [95% CI]",
    "n",
    "unparseable / unanswered / truncated",
    "cost per 1,000 examples (prompted) / training (fine-tuned)",
]
CAPTION = (
    "Primary metric per task, higher is better, [95% CI]: fine-tuned rows as in the tables above "
    "(over seeds, or a bootstrap over test examples); prompted rows: a bootstrap over the examples "
    "asked. Prompted rows score unparseable and unanswered answers as wrong; truncated prompts had "
    "their code cut to fit the context. Code search by reranking ranks a pool (the true code plus "
    "BM25-nearest others): an upper bound of full-split ranking; by embeddings it ranks the whole "
    "split, as fine-tuned runs do. Cost per 1,000 examples (backend seconds, prompt tokens) for "
    "prompted rows, and the training run's wall time and estimated FLOPs for fine-tuned rows (one run "
    "trains every task of its group): lower is better."
)


def prompted_runs(a: StudyAnalysis) -> list[RunRecord]:
    return [r for r in a.runs.records if r.mode == PROMPTING and r.status == "finished"]


def side_by_side(a: StudyAnalysis) -> Table | None:
    """The combined results table, or None when no prompting run finished."""
    from mtpeft.report.build import Table

    prompted = prompted_runs(a)
    if not prompted:
        return None
    tasks = list(dict.fromkeys([*a.tasks, *(t for r in prompted for t in r.details.get("tasks", {}))]))
    rows = []
    for task in tasks:
        metric = _primary(a, task, prompted)
        rows += _fine_tuned_rows(a, task, metric)
        rows += [_prompted_row(r, task, metric) for r in prompted if task in r.details.get("tasks", {})]
        rows += _baseline_rows(a, prompted, task, metric)
    return Table("Fine-tuned, prompted and baselines, per task", CAPTION, COLUMNS, rows)


def _primary(a: StudyAnalysis, task: str, prompted: list[RunRecord]) -> str:
    if task in a.runs.primary:
        return a.runs.primary[task]
    from mtpeft.tasks import get_task

    try:
        return get_task(task).primary
    except Exception:  # noqa: BLE001 - an alias or a task YAML moved since: the first metric stored
        stored = next(
            r.details["tasks"][task]["metrics"] for r in prompted if task in r.details.get("tasks", {})
        )
        return next(iter(stored), "-")


def _fine_tuned_rows(a: StudyAnalysis, task: str, metric: str) -> list[list[str]]:
    """Every fine-tuned score of the task: trained alone, and in each shared-module group holding it."""
    from mtpeft.report.build import score_cell

    rows = []
    for arm in a.arms:
        groups = a.scores.get(arm, {})
        ordered = sorted(groups, key=lambda g: (len(g) > 1, len(g), g))  # alone first, then by size
        for group in ordered:
            estimate = groups[group].get(task)
            if task not in group or estimate is None or estimate.mean is None:
                continue
            others = [t for t in group if t != task]
            setting = (
                "fine-tuned on this task alone"
                if not others
                else f"fine-tuned, one module shared with {'+'.join(others)}"
            )
            cost = _training_cost(a, arm, group)
            rows.append([task, metric, str(arm), setting, score_cell(estimate), "-", "-", cost])
    return rows


def _training_cost(a: StudyAnalysis, arm: Arm, group: tuple[str, ...]) -> str:
    """A fine-tuned row's cost: what training its run took (mean over seeds), shared by its group's tasks."""
    records = list(a.runs.runs(arm, group).values())
    walls = [r.cost.get("wall_time_s") for r in records if r.cost.get("wall_time_s") is not None]
    work = [r.cost.get("train_flops_estimate") for r in records if r.cost.get("train_flops_estimate")]
    if not walls:
        return "-"
    shared = f", for {len(group)} tasks" if len(group) > 1 else ""
    flops = f", {sum(work) / len(work):.2e} FLOPs" if work else ""
    return f"training {sum(walls) / len(walls):,.0f} s{flops}{shared}"


def _setting(record: RunRecord) -> str:
    details = record.details
    if details.get("mode") == "embed":
        return "embeddings (mean-pooled hidden states), cosine"
    return f"{details.get('shots', 0)}-shot, {details.get('mode', '?')}"


def _prompted_row(record: RunRecord, task: str, metric: str) -> list[str]:
    from mtpeft.report.build import score_cell

    details = record.details["tasks"][task]
    value = details.get("metrics", {}).get(metric)
    interval = details.get("intervals", {}).get(metric) or (None, None)
    subset = " (seeded subset)" if record.details.get("limit") else ""
    counts = " / ".join(str(details.get(k, 0)) for k in ("unparseable", "unanswered", "truncated"))
    per_1k = details.get("cost_per_1000", {})
    cost = (
        f"{per_1k.get('seconds', 0):,.0f} s, {per_1k.get('tokens_in', 0):,.0f} tokens in" if per_1k else "-"
    )
    return [
        task,
        metric,
        f"{record.model} (prompted)",
        _setting(record),
        score_cell(Estimate(value, *interval)),
        f"{details.get('examples', '-')}{subset}",
        counts,
        cost,
    ]


def _baseline_rows(a: StudyAnalysis, prompted: list[RunRecord], task: str, metric: str) -> list[list[str]]:
    """TF-IDF and majority: the fine-tuned runs' (newest) where there are some, else the prompting runs'."""
    from mtpeft.report.build import _baseline, num

    rows = []
    for name in ("tfidf", "majority", "copy"):
        value, where = _baseline(a, task, name), "fine-tuned runs' test examples"
        if value is None:
            found = [r.baselines.get(task, {}).get(name, {}).get(metric) for r in reversed(prompted)]
            value, where = next((v for v in found if v is not None), None), "prompted examples"
        if value is not None:
            rows.append(
                [task, metric, name, f"baseline, trained on train; on the {where}", num(value), "-", "-", "-"]
            )
    return rows
