"""`mtpeft train | evaluate | evaluations | runs | methods | demo`: training runs and their results."""

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
    log_with: list[str] = typer.Option(
        [],
        "--log-with",
        help="Live curves through an experiment tracker: tensorboard, wandb, ... (repeat for several); "
        "replaces the config's log_with. Files under RUN_DIR/tracking/.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train one shared module over the config's tasks (mode multi) or one per task (mode single)."""
    from mtpeft.config import load_config
    from mtpeft.config_files import located
    from mtpeft.errors import ConfigError
    from mtpeft.report.console import console, markup_safe, plain, scores_table
    from mtpeft.training.run import is_main_process, run_training

    # Typed flags are set as values, not parsed as YAML (`--model 'a: b'` is a name, not a mapping).
    flags = {
        "mode": mode,
        "model": model,
        "method": method,
        "max_steps": max_steps,
        "seed": seed,
        "workspace": workspace,
        "log_with": list(log_with) or None,  # not given: the config's own
    }
    cfg = load_config(config, list(set_), fields=flags)
    try:
        results = run_training(cfg, resume=resume, progress=progress, source=config)
        if not is_main_process():
            return  # the main process prints the results (every process holds them)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]stopped; the run is recorded as interrupted. Continue it from its last checkpoint: "
            f"mtpeft train {markup_safe(config)} --resume (with the same --set/flags)[/yellow]"
        )
        raise typer.Exit(130) from None
    except ConfigError as err:  # raised once the run started (e.g. method options): name the file too
        raise located(err, config) from err
    rows = []
    for result in results:
        for task in result.tasks:
            test = result.metrics.get("test", {}).get(task, {})
            metric = next(iter(test), None)
            if metric:
                rows.append((task, metric, {"model": test[metric]}, result.baselines.get(task, {})))
        console.print(plain(f"run {result.run_id} -> {result.run_dir}"))
    if rows:
        console.print(scores_table(f"{cfg.name}: test scores", rows, ["model"]))


def _evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory (workspace/runs/...)."),
    data: list[str] = typer.Option(
        [],
        "--data",
        help="TASK=PATH: score the run's task TASK on the data folder PATH, any folder its format reads "
        "(e.g. one holding only test.jsonl); repeat for more. Recorded as an evaluation of the run.",
    ),
    split: str = typer.Option("test", help="Split to score."),
    max_examples: str | None = typer.Option(
        None,
        "--max-examples",
        help="all | N. With --data the default is all (the whole split). Without --data the default is "
        "the run's own seeded subset; all or N score each task's own data folder as an evaluation.",
    ),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    precision: float | None = typer.Option(
        None,
        "--precision",
        help="With --data: the target precision (default 0.9) whose threshold, chosen on the run's "
        "validation split, is applied to the data; the precision and recall it reaches there are reported "
        "(binary and pair tasks).",
    ),
) -> None:
    """Score a trained run: on its own splits, or on other data (--data); write official prediction files."""
    if data or max_examples is not None:
        _evaluate_on_data(
            run_dir, data, split, max_examples, baselines=baselines, progress=progress, precision=precision
        )
        return
    if precision is not None:
        from mtpeft.errors import InputError

        raise InputError(
            "--precision applies to evaluations on data (--data TASK=PATH, or --max-examples for the run's "
            "own data folders); the run's own split has its validation thresholds in `mtpeft calibrate`"
        )
    from mtpeft import layout
    from mtpeft.evaluation.run_eval import evaluate_run
    from mtpeft.modeling.build import read_heads_meta
    from mtpeft.report.console import console, plain, scores_table
    from mtpeft.store import RunStore
    from mtpeft.training.run import join_processes

    read_heads_meta(run_dir / layout.BEST_DIR)  # one clear error when there is no trained model
    # Under torchrun / accelerate launch each process scores its share; the main one writes and prints.
    shard = join_processes()
    metrics, base = evaluate_run(run_dir, split, baselines=baselines, progress=progress, shard=shard)
    if shard.rank != 0:
        return
    store_path = layout.store_path(run_dir.resolve().parent.parent)  # workspace/runs/<run>
    run_file = layout.read_run_file(run_dir) if store_path.exists() else None
    if run_file is not None:
        RunStore(store_path).update_metrics(run_file["run_id"], split, metrics)
    rows = [(t, next(iter(m)), {"model": m[next(iter(m))]}, base.get(t, {})) for t, m in metrics.items()]
    console.print(scores_table(f"{run_dir.name}: {split}", rows, ["model"]))  # escapes user text itself
    _print_calibration(run_dir, split)
    console.print(plain(f"prediction files: {layout.predictions_dir(run_dir, split)}"))


def _print_calibration(run_dir: Path, split: str) -> None:
    """ECE before/after temperature scaling per classification task, as evaluate_run wrote them."""
    import json

    from mtpeft import layout
    from mtpeft.evaluation.calibration import ECE_BINS
    from mtpeft.evaluation.run_eval import CALIBRATION_KEY
    from mtpeft.report.console import calibration_table, console

    written = json.loads(layout.metrics_path(run_dir, split).read_text(encoding="utf-8"))
    scores = written.get(CALIBRATION_KEY) or {}
    if scores:
        title = f"{run_dir.name}: calibration on {split} ({ECE_BINS} equal-width ECE bins)"
        console.print(calibration_table(title, scores))
    if not all(row["calibrated"] for row in scores.values()):
        console.print(f"uncalibrated: probabilities are the heads' raw softmax; mtpeft calibrate {run_dir}")


def _evaluate_on_data(
    run_dir: Path,
    data: list[str],
    split: str,
    max_examples: str | None,
    *,
    baselines: bool,
    progress: bool,
    precision: float | None,
) -> None:
    """Every request checked before the model loads; one table of scores; where files and rows went."""
    from mtpeft.calibration_file import check_target
    from mtpeft.evaluation import on_data, other_data
    from mtpeft.report.console import console, evaluation_details_table, evaluation_table, markup_safe

    target = other_data.DEFAULT_PRECISION if precision is None else precision
    check_target(target)
    limit = on_data.parse_max_examples(max_examples or on_data.ALL)
    run = on_data.open_run(run_dir)
    if data:
        pairs = [on_data.parse_data_option(item) for item in data]
        requests = [on_data.DataRequest(task, path, split, limit) for task, path in pairs]
    else:
        requests = on_data.own_data_requests(run, split, limit)
    from mtpeft.training.run import join_processes

    shard = join_processes()  # under torchrun each process scores its share; the main one reports
    outcome = on_data.evaluate_on_data(
        run_dir, requests, baselines=baselines, progress=progress, run=run, shard=shard, precision=target
    )
    if outcome is None:
        return
    for evaluation in outcome.evaluations:
        console.print(evaluation_table(evaluation))
        if evaluation.details:
            console.print(evaluation_details_table(evaluation))
        for note in evaluation.notes + other_data.skipped_notes(evaluation.details):
            console.print(f"[yellow]{markup_safe(note)}[/yellow]")
        console.print(f"prediction files: {markup_safe(evaluation.predictions_dir)}")
    if outcome.store is not None:
        console.print(f"recorded in {markup_safe(str(outcome.store))} (mtpeft evaluations, mtpeft report)")
    else:
        console.print(f"[yellow]{markup_safe(outcome.note or 'not recorded')}[/yellow]")


def _evaluations(
    workspace: Path = typer.Option(Path("workspace"), help="Workspace holding mtpeft.sqlite."),
    run: str | None = typer.Option(None, help="Only this run (its id or the start of it)."),
) -> None:
    """List the evaluations of runs on other data (`mtpeft evaluate RUN_DIR --data TASK=PATH`)."""
    from mtpeft.errors import ConfigError
    from mtpeft.layout import store_path
    from mtpeft.report.console import console, evaluations_table
    from mtpeft.store import RunStore

    path = store_path(workspace)
    if not path.is_file():
        raise ConfigError(f"no results store at {path}; train a run first", field="--workspace")
    store = RunStore(path)
    names = {r.run_id: r.name for r in store.list_runs()}
    records = [e for e in store.list_evaluations() if run is None or e.run_id.startswith(run)]
    console.print(evaluations_table(records, names))


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
    """List the PEFT methods (all share one code path; `full` trains every weight) and the loss weightings."""
    from rich.table import Table

    # Names only: importing the methods and weightings takes seconds.
    from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS, METHOD_DESCRIPTIONS
    from mtpeft.report.console import console, plain

    titles = {
        "PEFT methods (method:)": METHOD_DESCRIPTIONS,
        "loss weightings (loss_weighting:)": LOSS_WEIGHTING_DESCRIPTIONS,
    }
    for title, descriptions in titles.items():
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        for name, description in descriptions.items():
            table.add_row(plain(name), plain(description))
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
    app.command("evaluations")(_evaluations)
    app.command("runs")(_runs)
    app.command("methods")(_methods)
    app.command("demo")(_demo)
