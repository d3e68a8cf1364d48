"""`mtpeft merge RUN RUN ... --method M --out DIR`: one run from trained LoRA runs, without training.

The merged module comes from peft's add_weighted_adapter; every source run's heads are kept. The result is
a run directory like a trained one (evaluate, calibrate, scan, serve, report, mtpeft.load), recorded in the
store of the workspace it is written into (WORKSPACE/runs/NAME) with its source runs and settings.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mtpeft.merging.settings import COMBINATIONS

_METHODS_HELP = "; ".join(f"{c.name}: {c.description}" for c in COMBINATIONS.values())


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)


def merge(
    runs: list[Path] = typer.Argument(..., help="Trained run directories (workspace/runs/...), two or more."),
    method: str = typer.Option(..., "--method", help=f"How the modules combine. {_METHODS_HELP}."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="The new run directory. In WORKSPACE/runs/ it is recorded in that workspace's store "
        "(evaluate and report look there).",
    ),
    density: float | None = typer.Option(
        None,
        "--density",
        help="ties, dare_ties, dare_linear, magnitude_prune: the share of each module's entries kept (0-1].",
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="One weight per run, comma-separated, in order (default: 1 each)."
    ),
    evaluate: bool = typer.Option(
        True,
        "--evaluate/--no-evaluate",
        help="Score the merged run on its splits (its sources' evaluate_splits).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Merge trained LoRA runs into one run: one module for all their tasks, each task with its own head."""
    from mtpeft.errors import ConfigError
    from mtpeft.merging.merge import merge_runs
    from mtpeft.merging.settings import MergeSettings
    from mtpeft.report.console import console, markup_safe, plain, scores_table

    try:
        settings = MergeSettings(method=method, weights=_parse_weights(weights), density=density)
    except ValueError as err:  # pydantic's ValidationError is one: say it as the options' problem
        raise ConfigError(_first_error(err), field="--method/--density/--weights") from None
    result = merge_runs(list(runs), settings, out, evaluate=evaluate, progress=progress)
    rows = []
    for split, by_task in result.metrics.items():
        for task, scores in by_task.items():
            metric = next(iter(scores), None)
            if metric:
                rows.append((task, metric, {"merged": scores[metric]}, result.baselines.get(task, {})))
        if rows:
            console.print(scores_table(f"{out.name}: {split} scores", rows, ["merged"]))
            rows = []
    console.print(plain(f"merged run {result.run_id} -> {result.run_dir} ({', '.join(result.tasks)})"))
    for note in result.notes:
        console.print(f"[yellow]{markup_safe(note)}[/yellow]")


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights {text!r}: give numbers separated by commas, e.g. 1,0.5") from None


def _first_error(err: ValueError) -> str:
    """pydantic's message without its boilerplate: the first error's own text."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("ctx", {}).get("error") or first["msg"]).removeprefix("Value error, ")
    return str(err)
