"""Rich console tables for runs, per-task scores beside baselines, and the cost comparison."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


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
        title=title,
        caption="Higher is better for every score; baselines are trained on the same train split.",
    )
    table.add_column("task")
    table.add_column("metric")
    for column in columns:
        table.add_column(column, justify="right")
    for baseline in ("majority", "random", "tfidf"):
        table.add_column(baseline, justify="right", style="dim")
    for task, metric, scores, baselines in rows:
        cells = [_fmt(scores.get(c)) for c in columns]
        cells += [_fmt(baselines.get(b, {}).get(metric)) for b in ("majority", "random", "tfidf")]
        table.add_row(task, metric, *cells)
    return table


def cost_table(costs: dict[str, dict[str, Any]], num_tasks: int) -> Table:
    """costs: {setting: summed cost report}. Ratios are against the first setting."""
    table = Table(
        title="Cost (measured on this machine; FLOPs are estimates from parameters x tokens)",
        caption=f"{num_tasks} tasks. Lower is better for every column.",
    )
    for column in (
        "setting",
        "shared-module params",
        "head params",
        "trainable params",
        "% of backbone",
        "stored",
        "tokens",
        "train FLOPs (est.)",
        "wall time",
        "peak memory",
        "tokens/s",
    ):
        table.add_column(column, justify="right" if column != "setting" else "left")
    for setting, cost in costs.items():
        table.add_row(
            setting,
            f"{cost.get('shared_params', 0):,}",
            f"{cost.get('head_params', 0):,}",
            f"{cost.get('trainable_params', 0):,}",
            f"{cost.get('trainable_pct', 0):.2f}%",
            _human_bytes(cost.get("stored_bytes", 0)),
            f"{cost.get('tokens', 0):,}",
            f"{cost.get('train_flops_estimate', 0):.2e}",
            f"{cost.get('wall_time_s', 0):.0f} s",
            _human_bytes(cost.get("peak_memory_bytes", 0)),
            f"{cost.get('tokens_per_s', 0):.0f}",
        )
    return table


def runs_table(records: list[Any]) -> Table:
    table = Table(title="Runs")
    for column in (
        "run",
        "name",
        "status",
        "mode",
        "model",
        "method",
        "tasks",
        "seed",
        "test (primary)",
        "created",
    ):
        table.add_column(column)
    for r in records:
        test = r.metrics.get("test", {})
        primary = ", ".join(f"{t}={_fmt(next(iter(m.values()), None))}" for t, m in test.items() if m)
        table.add_row(
            r.run_id[:8],
            r.name,
            r.status,
            r.mode,
            r.model,
            r.method,
            ",".join(r.tasks),
            str(r.seed),
            primary or "-",
            (r.created_at or "")[:19],
        )
    return table
