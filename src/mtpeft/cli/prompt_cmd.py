"""`mtpeft prompt`: a general LLM prompted directly on the tasks fine-tuned runs are scored on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from mtpeft.prompting.runner import ModeRun


def register(app: typer.Typer) -> None:
    app.command("prompt")(_prompt)


def _prompt(
    config: Path | None = typer.Argument(None, help="Prompt config YAML (optional; flags override it)."),
    model: str | None = typer.Option(
        None, help="Local causal LM (short name, hub id or folder) or openai:http://HOST:PORT/v1."
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Served model name (openai: models)."),
    task: list[str] = typer.Option(
        [], "--task", help="NAME=DATA_DIR: a built-in task or task YAML and its data folder; repeat for more."
    ),
    shots: int | None = typer.Option(
        None, help="Few-shot examples per query, BM25-nearest from train (0: none)."
    ),
    limit: int | None = typer.Option(
        None,
        help="Seeded subset of N examples of the split: the one a fine-tuned run with the same seed scores.",
    ),
    mode: str | None = typer.Option(
        None,
        help="generate | score | embed, comma-separated; both = generate,score (default); all = all three.",
    ),
    workspace: str | None = typer.Option(None, help="Folder for runs/ and the store (default: workspace)."),
    name: str | None = typer.Option(None, help="Run name prefix (default: prompt)."),
    split: str | None = typer.Option(None, help="Split to score (default: test)."),
    seed: int | None = typer.Option(None, help="Seed of the subset (default 0, as fine-tuned runs)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Prompts per forward pass (local)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Tokens generated per answer."),
    max_target_tokens: int | None = typer.Option(
        None, "--max-target-tokens", help="Generation tasks (summarization, repair): tokens per reply."
    ),
    context_length: int | None = typer.Option(
        None, "--context-length", help="Prompt + answer tokens at most."
    ),
    pool_size: int | None = typer.Option(None, "--pool-size", help="Code search: candidates per query (10)."),
    concurrency: int | None = typer.Option(None, help="Requests in flight (openai: models)."),
    max_retries: int | None = typer.Option(
        None, "--max-retries", help="Retries per request (openai: models)."
    ),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="Variable holding the API key."),
    fresh: bool = typer.Option(
        False, "--fresh", help="Discard these runs' answers and ask everything again."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Prompt an LLM on each task (zero- or few-shot); scored and stored beside fine-tuned runs."""
    from mtpeft.prompting.config import load_prompt_config, parse_task_option
    from mtpeft.prompting.runner import run_prompting
    from mtpeft.report.console import console, markup_safe, plain

    fields: dict[str, Any] = {
        "model": model, "model_name": model_name, "shots": shots, "limit": limit, "mode": mode,
        "workspace": workspace, "name": name, "split": split, "seed": seed, "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "max_target_tokens": max_target_tokens,
        "context_length": context_length, "pool_size": pool_size,
        "concurrency": concurrency, "max_retries": max_retries, "api_key_env": api_key_env,
        "tasks": [parse_task_option(t) for t in task] or None,
    }  # fmt: skip
    cfg = load_prompt_config(config, fields)
    try:
        runs = run_prompting(cfg, progress=progress, fresh=fresh, source=config)
    except KeyboardInterrupt:
        console.print(
            "[yellow]stopped; answers so far are kept. Run the same command again to continue: only the "
            "unanswered examples are asked.[/yellow]"
        )
        raise typer.Exit(130) from None
    for run in runs:
        console.print(results_table(run))
        for note in run.notes:
            console.print(f"[yellow]{markup_safe(note)}[/yellow]")
        state = "already finished, nothing asked (--fresh to redo)" if run.reused else "recorded"
        console.print(plain(f"run {run.run_id[:8]} {state} -> {run.run_dir}"))


def _score_cell(details: dict[str, Any], metric: str) -> str:
    value = details.get("metrics", {}).get(metric)
    if value is None:
        return "-"
    low, high = details.get("intervals", {}).get(metric, (None, None))
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _primary(task: str, details: dict[str, Any]) -> str:
    from mtpeft.tasks import get_task

    try:
        return get_task(task).primary
    except Exception:  # noqa: BLE001 - an alias or a moved YAML: the first metric stored
        return next(iter(details.get("metrics", {})), "-")


def results_table(run: ModeRun) -> Table:
    """One row per task: primary score [95% CI], counts, TF-IDF on the same examples, cost; 80 columns."""
    from rich.table import Table

    from mtpeft.report.console import plain

    table = Table(
        title=plain(f"{run.name} ({run.mode})"),
        caption="Score: higher is better, [95% bootstrap CI]. unparsed / cut / failed: unparseable answers, "
        "truncated prompts, unanswered requests (unparseable and unanswered are scored wrong). tfidf: on the "
        "same examples. s/1k: backend seconds per 1,000 examples, lower is better. All: runs.csv, report.",
    )
    for column in ("task", "metric", "score [95% CI]", "n", "unparsed / cut / failed", "tfidf", "s/1k"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, details in run.results.items():
        metric = _primary(task, details)
        tfidf = run.baselines.get(task, {}).get("tfidf", {}).get(metric)
        counts = " / ".join(str(details.get(k, 0)) for k in ("unparseable", "truncated", "unanswered"))
        seconds = details.get("cost_per_1000", {}).get("seconds")
        cells = [_score_cell(details, metric), str(details.get("examples", "-")), counts]
        cells += ["-" if tfidf is None else f"{tfidf:.3f}", "-" if seconds is None else f"{seconds:,.0f}"]
        table.add_row(plain(task), plain(metric), *cells)
    return table
