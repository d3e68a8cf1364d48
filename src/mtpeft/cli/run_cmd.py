"""`mtpeft train | evaluate | runs | methods | demo`: training runs and their results."""

from __future__ import annotations

from pathlib import Path

import typer


def _train(
    config: Path = typer.Argument(..., help="Train config YAML (see examples/)."),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override any field: key=value, dotted for nesting "
        "(e.g. --set max_steps=100 --set tasks.0.batch_size=4).",
    ),
    mode: str | None = typer.Option(None, help="multi | single"),
    model: str | None = typer.Option(None, help="Model short name, hub id or folder."),
    method: str | None = typer.Option(None, help="PEFT method (see `mtpeft methods`)."),
    max_steps: int | None = typer.Option(None, help="Optimiser steps."),
    seed: int | None = typer.Option(None),
    workspace: str | None = typer.Option(None, help="Folder for runs/ and the store."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train one shared module over the config's tasks (mode multi) or one per task (mode single)."""
    from mtpeft.config import load_config
    from mtpeft.report.console import console, scores_table
    from mtpeft.training.run import run_training

    flags = {
        "mode": mode,
        "model": model,
        "method": method,
        "max_steps": max_steps,
        "seed": seed,
        "workspace": workspace,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(set_)
    cfg = load_config(config, overrides)
    try:
        results = run_training(cfg, resume=resume, progress=progress)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]stopped; the run is recorded as interrupted. Continue it from its last checkpoint: "
            f"mtpeft train {config} --resume (with the same --set/flags)[/yellow]"
        )
        raise typer.Exit(130) from None
    rows = []
    for result in results:
        for task in result.tasks:
            test = result.metrics.get("test", {}).get(task, {})
            metric = next(iter(test), None)
            if metric:
                rows.append((task, metric, {"model": test[metric]}, result.baselines.get(task, {})))
        console.print(f"run {result.run_id} -> {result.run_dir}")
    if rows:
        console.print(scores_table(f"{cfg.name}: test scores", rows, ["model"]))


def _evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory (workspace/runs/...)."),
    split: str = typer.Option("test", help="Split to score."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines"),
) -> None:
    """Score a trained run on a split, write official prediction files, record it in the store."""
    import json

    from mtpeft import layout
    from mtpeft.errors import ConfigError
    from mtpeft.evaluation.run_eval import evaluate_run
    from mtpeft.report.console import console, scores_table
    from mtpeft.store import RunStore

    best = run_dir / layout.BEST_DIR
    if not (best / layout.HEADS_META).exists():
        missing = f"{layout.BEST_DIR}/{layout.HEADS_META}"
        raise ConfigError(f"{run_dir} holds no trained model (missing {missing}); train it first")
    metrics, base = evaluate_run(run_dir, split, baselines=baselines)
    store_path = layout.store_path(run_dir.parent.parent)  # workspace/runs/<run>
    if store_path.exists():
        run_id = json.loads((run_dir / layout.RUN_FILE).read_text())["run_id"]
        RunStore(store_path).update_metrics(run_id, split, metrics)
    rows = [(t, next(iter(m)), {"model": m[next(iter(m))]}, base.get(t, {})) for t, m in metrics.items()]
    console.print(scores_table(f"{run_dir.name}: {split}", rows, ["model"]))
    console.print(f"prediction files: {layout.predictions_dir(run_dir, split)}")


def _runs(
    workspace: Path = typer.Option(Path("workspace"), help="Workspace holding mtpeft.sqlite."),
    study: str | None = typer.Option(None),
    status: str | None = typer.Option(None, help="running | finished | failed | interrupted"),
) -> None:
    """List the runs recorded in the workspace's store."""
    from mtpeft.layout import store_path
    from mtpeft.report.console import console, runs_table
    from mtpeft.store import RunStore

    store = RunStore(store_path(workspace))
    console.print(runs_table(store.list_runs(study=study, status=status)))


def _methods() -> None:
    """List the PEFT methods (all share one code path; `full` trains every weight)."""
    from rich.table import Table

    from mtpeft.peft_methods import PEFT_METHODS
    from mtpeft.report.console import console

    table = Table(title="PEFT methods")
    table.add_column("name")
    table.add_column("description")
    for name, method in PEFT_METHODS.items():
        table.add_row(name, method.description)
    console.print(table)


def _demo(
    workspace: Path = typer.Option(Path("demo_workspace"), help="Where data, runs and the store go."),
    steps: int | None = typer.Option(None, help="Optimiser steps per run (default: the demo's budget)."),
) -> None:
    """Build the offline benchmark, train single-task LoRA per task vs one shared LoRA, compare."""
    from mtpeft.demo import run_demo

    run_demo(workspace, steps=steps)


def register(app: typer.Typer) -> None:
    app.command("train")(_train)
    app.command("evaluate")(_evaluate)
    app.command("runs")(_runs)
    app.command("methods")(_methods)
    app.command("demo")(_demo)
