"""Rich console tables for runs, per-task scores beside baselines, and the cost comparison."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# No emoji codes: a run named `:x:` is shown as written. Markup stays on for our own styling, so user
# text (names, paths, error messages) goes through `plain` or `markup_safe` below.
console = Console(emoji=False)

# Terminal control characters (C0 but tab and newline, DEL, C1): a name holding ESC [31m would recolour
# the terminal, one holding a carriage return would overwrite the line.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """`text` with terminal control characters shown as `\\xNN` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def plain(text: object) -> Text:
    """User text (a name, a path, an error) as a renderable shown exactly as written: no markup."""
    return Text(printable(text))


def markup_safe(text: object) -> str:
    """User text to embed in a markup string (`[yellow]...{markup_safe(path)}...[/yellow]`)."""
    return escape(printable(text))


MAJORITY, TFIDF = "majority", "tfidf"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def scores_table(
    title: str,
    rows: list[tuple[str, str, dict[str, float], dict[str, dict[str, float]]]],
    columns: list[str],
) -> Table:
    """rows: (task, primary metric, {column: score}, baselines {name: {metric: value}})."""
    table = Table(
        title=plain(title),
        caption="Higher is better for every score; baselines are trained on the same train split.",
    )
    table.add_column("task")
    table.add_column("metric")
    for column in columns:
        table.add_column(plain(column), justify="right")
    # `copy` (the input as the output) exists for generation tasks only; shown where a task has it.
    names = ["majority", "random", "tfidf"] + (["copy"] if any("copy" in r[3] for r in rows) else [])
    for baseline in names:
        table.add_column(baseline, justify="right", style="dim")
    for task, metric, scores, baselines in rows:
        cells = [_fmt(scores.get(c)) for c in columns]
        cells += [_fmt(baselines.get(b, {}).get(metric)) for b in names]
        table.add_row(plain(task), plain(metric), *cells)
    return table


# (row label, cost-report key, how to show a value); lower is better for every row except tokens/s.
COST_ROWS: list[tuple[str, str, Callable[[float], str]]] = [
    ("shared-module params", "shared_params", lambda v: f"{v:,.0f}"),
    ("head params", "head_params", lambda v: f"{v:,.0f}"),
    ("all trainable params", "trainable_params", lambda v: f"{v:,.0f}"),
    ("% of backbone", "trainable_pct", lambda v: f"{v:.2f}%"),
    ("stored (module + heads)", "stored_bytes", _human_bytes),
    ("non-padding tokens", "tokens", lambda v: f"{v:,.0f}"),
    ("train FLOPs (estimate)", "train_flops_estimate", lambda v: f"{v:.2e}"),
    ("wall time", "wall_time_s", lambda v: f"{v:.0f} s"),
    ("peak memory", "peak_memory_bytes", _human_bytes),
    ("tokens/s", "tokens_per_s", lambda v: f"{v:.0f}"),
]


def cost_table(costs: dict[str, dict[str, Any]], num_tasks: int) -> Table:
    """costs: {setting: summed cost report}, one column each; with two settings, a first/second ratio.

    Measures are rows, so the table fits an 80-column terminal whatever the number of settings.
    """
    settings = list(costs)
    table = Table(
        title="Cost (measured here; FLOPs estimated from parameters x tokens)",
        caption=plain(
            f"{num_tasks} tasks. Lower is better, except tokens/s."
            + (f" ratio = {settings[0]} / {settings[1]}." if len(settings) == 2 else "")
        ),
    )
    table.add_column("measure")
    for setting in settings:
        table.add_column(plain(setting), justify="right")
    with_ratio = len(settings) == 2
    if with_ratio:
        table.add_column("ratio", justify="right")
    for label, key, show in COST_ROWS:
        values = [costs[s].get(key, 0) or 0 for s in settings]
        cells = [show(v) for v in values]
        if with_ratio:
            cells.append(f"{values[0] / values[1]:.2f}x" if values[1] else "-")
        table.add_row(label, *cells)
    return table


def runs_table(records: list[Any]) -> Table:
    table = Table(title="Runs")
    # The node column only where some run trained on a Ray cluster (study executor `ray`).
    nodes = any(r.details.get("node") for r in records)
    columns = ["run", "name", "status", "mode", "model", "method", "tasks", "seed", "test (primary)"]
    for column in [*columns, *(["node"] if nodes else []), "created"]:
        table.add_column(column)
    for r in records:
        test = r.metrics.get("test", {})
        primary = ", ".join(f"{t}={_fmt(next(iter(m.values()), None))}" for t, m in test.items() if m)
        cells = [r.run_id[:8], r.name, r.status, r.mode, r.model, r.method, ",".join(r.tasks), r.seed]
        cells.append(primary or "-")
        if nodes:
            cells.append(_node(r.details.get("node")))
        table.add_row(*(plain(c) for c in (*cells, (r.created_at or "")[:19])))
    return table


def _node(node: dict[str, Any] | None) -> str:
    """host/node-id prefix of the node a run finished on, and `resumed@STEP` if it resumed there."""
    if not node:
        return "-"
    resumed = node.get("resumed_from_step")
    return f"{node.get('host')}/{str(node.get('node_id'))[:8]}" + (f" resumed@{resumed}" if resumed else "")


def _interval(record: Any) -> str:
    return "-" if record.interval is None else f"[{record.interval[0]:.3f}, {record.interval[1]:.3f}]"


def evaluation_table(record: Any) -> Table:
    """One evaluation of a run on some data (a store EvaluationRecord): metrics as rows, within 80 columns.

    Paths and names come from the user: they are escaped, never read as rich markup.
    """

    subset = "" if record.max_examples is None else ", a seeded subset"
    scored = f"{record.split}, {record.n_examples} examples{subset}"
    table = Table(
        title=markup_safe(f"{record.task} on {record.data_path} ({scored})"),
        caption="Higher is better. 95% CI: bootstrap over the examples (primary metric). majority: the most "
        "frequent label of this data itself (a reference for its imbalance); tfidf: trained on the run's own "
        "train data.",
    )
    for column in ("metric", "score", "95% CI", f"{MAJORITY} (this data)", f"{TFIDF} (run's train)"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric, value in record.metrics.items():
        interval = _interval(record) if metric == record.metric else "-"
        baselines = [_fmt(record.baselines.get(b, {}).get(metric)) for b in (MAJORITY, TFIDF)]
        table.add_row(markup_safe(metric), _fmt(value), interval, *baselines)
    return table


def evaluation_details_table(record: Any) -> Table:
    """A classification task's calibration, precision at the validation threshold and OOD separation on
    the evaluated data (mtpeft.evaluation.other_data), one quantity per row."""
    from mtpeft.evaluation.other_data import detail_rows

    table = Table(
        title=markup_safe(
            f"{record.task} on that data: calibration, precision at the validation threshold, OOD"
        ),
        caption="ECE, NLL: lower is better. OOD AUROC: how well the run's out-of-distribution score tells "
        "this data from the run's own test split (1 = always, 0.5 = chance).",
    )
    table.add_column("quantity", overflow="fold")
    table.add_column("value", overflow="fold")
    for what, value in detail_rows(record.details):
        table.add_row(markup_safe(what), markup_safe(value))
    return table


def evaluations_table(records: list[Any], run_names: dict[str, str]) -> Table:
    """The store's evaluations of runs on other data, one row each (primary metric, and for
    classification tasks ECE before -> after the run's temperature, precision reached at the validation
    threshold, OOD AUROC).

    Paths and names come from the user: they are escaped, never read as rich markup.
    """
    from mtpeft.evaluation.other_data import ece_summary, ood_summary, precision_summary

    table = Table(
        title="Evaluations on other data",
        caption="Primary metric, higher is better, [95% bootstrap CI over the examples]. majority: the most "
        "frequent label of the evaluated data itself (a reference for its imbalance); tfidf: trained on the "
        "run's own train data. ECE: T = 1 -> the run's temperature, lower is better. precision: reached at "
        "the threshold chosen on the run's validation split for the target, [exact 95% CI]. OOD AUROC: the "
        "run's own test split vs this data, default score.",
    )
    columns = ("run", "task", "data", "split", "n", "metric", "score [95% CI]", MAJORITY, TFIDF)
    for column in (*columns, "ECE", "precision", "OOD AUROC"):
        # A path folds onto several lines rather than being cut short: all of it is needed to find the data.
        numeric = column in ("n", "score [95% CI]", MAJORITY, TFIDF)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for r in records:
        cells = [f"{run_names.get(r.run_id, '?')} {r.run_id[:8]}", r.task, r.data_path, r.split]
        cells += [str(r.n_examples), r.metric, f"{_fmt(r.score)} {_interval(r)}"]
        cells += [_fmt(r.baselines.get(b, {}).get(r.metric)) for b in (MAJORITY, TFIDF)]
        cells += [f(r.details) for f in (ece_summary, precision_summary, ood_summary)]
        table.add_row(*(markup_safe(c) for c in cells))
    return table


def calibration_table(title: str, scores: dict[str, dict[str, Any]]) -> Table:
    """Per task: temperature, examples, NLL and ECE before -> after temperature scaling (an uncalibrated
    task says so in the T column)."""
    table = Table(title=plain(title))
    for column in ("task", "T", "n", "NLL before", "NLL after", "ECE before", "ECE after"):
        table.add_column(column, justify="left" if column == "task" else "right", overflow="fold")
    for task, row in scores.items():
        calibrated = row.get("calibrated", True)
        table.add_row(
            plain(task),
            f"{row['temperature']:.3f}" if calibrated else "uncalibrated",
            str(row["examples"]),
            _fmt(row["nll_before"]),
            _fmt(row["nll_after"]),
            _fmt(row["ece_before"]),
            _fmt(row["ece_after"]),
        )
    return table


def reliability_table(task: str, row: dict[str, Any]) -> Table:
    """The reliability diagram as a table: each non-empty confidence bin's examples, mean confidence and
    accuracy, before and after temperature scaling (bins are right-closed: 0.47-0.53 is (0.47, 0.53])."""
    table = Table(title=plain(f"{task}: reliability (top-label confidence vs accuracy)"))
    for column in ("bin", "n before", "conf before", "acc before", "n after", "conf after", "acc after"):
        table.add_column(column, justify="right")
    for before, after in zip(row["reliability_before"], row["reliability_after"], strict=True):
        if before["count"] or after["count"]:
            table.add_row(
                f"{before['low']:.2f}-{before['high']:.2f}",
                str(before["count"]),
                _fmt(before["confidence"]),
                _fmt(before["accuracy"]),
                str(after["count"]),
                _fmt(after["confidence"]),
                _fmt(after["accuracy"]),
            )
    return table
