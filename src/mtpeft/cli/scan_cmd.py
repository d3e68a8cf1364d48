"""`mtpeft scan PATH... --run RUN_DIR`: every function, method and test of a tree through a trained run.

PATH: a folder, a file, or several of both (pre-commit passes the changed files: see
.pre-commit-hooks.yaml and docs/using/ci.md). A file named explicitly is scanned even if --exclude
matches it; one in no language the scan reads is listed as skipped, not an error.

Extraction, batching, clone search and the report formats are the scan package's (mtpeft.scan); the
model is the run loaded by `mtpeft.load` (it implements scan's Analyzer). Progress bars go to stderr,
the report to stdout or --out, and the closing counts (files, skipped files, truncated functions,
findings) to stderr unless the table on stdout already ends with them.

--out is written through mtpeft.outputs.atomic_output (the old report stays until the new one is
complete) and checked before the model loads: its folder must exist, and it may not be a file the
scan reads. Paths and names from the tree are escaped wherever they reach the terminal.

Exit status: 0 when the scan ran, findings or not (a scan is a report, not a verdict); with
--fail-on LEVEL, 1 when any finding or clone pair is at LEVEL or above (for CI); 2 for an error.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mtpeft.errors import InputError

if TYPE_CHECKING:
    from mtpeft.scan import ScanResult, Thresholds

FORMATS = ("table", "json", "sarif", "html")
LEVELS = ("error", "warning", "note")  # most severe first


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)


def scan(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="PATH",
        help="Source folders or files to scan (several: e.g. the changed files pre-commit passes).",
    ),
    run_dir: Path = typer.Option(
        ..., "--run", help="A trained run directory (workspace/runs/...), or a folder `mtpeft export` wrote."
    ),
    tasks: list[str] = typer.Option(
        [], "--tasks", help="Tasks to ask (repeat, or comma-separated); default: all of the run's."
    ),
    fmt: str = typer.Option("table", "--format", help="table | json | sarif | html."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the report here instead of stdout."),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Gitignore-style pattern of paths to leave out (repeat)."
    ),
    default_excludes: bool = typer.Option(
        True, "--default-excludes/--no-default-excludes", help="Leave out .git, node_modules, venvs, builds."
    ),
    languages: list[str] = typer.Option(
        [], "--language", help="Only these languages (repeat): python, java, c, cpp."
    ),
    max_tokens: int | None = typer.Option(
        None,
        "--max-tokens",
        min=2,
        help="Tokens per unit for every task (default: each task's trained limit).",
    ),
    threshold: str | None = typer.Option(
        None, "--threshold", help="Levels by probability: error,warning,note (default 0.9,0.7,0.5)."
    ),
    precision: float | None = typer.Option(
        None,
        "--precision",
        help="Instead of --threshold: per task, flag (level error) from the smallest probability at which "
        "the run's validation precision reaches this, e.g. 0.9; refused where no threshold reaches it.",
    ),
    clones: bool = typer.Option(True, "--clones/--no-clones", help="Search clone pairs (pair task)."),
    fail_on: str | None = typer.Option(
        None, "--fail-on", help="error | warning | note: exit 1 when a finding or clone pair reaches it."
    ),
    include_unfamiliar: bool = typer.Option(
        False,
        "--include-unfamiliar",
        help="Report the task findings of units unlike the run's training data too (default: a note).",
    ),
    include_code: bool = typer.Option(
        False, "--include-code", help="json: put each unit's code in the report."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Units per model call."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    device: str | None = typer.Option(
        None, help="cpu, cuda, cuda:1, ... (default: the GPU if there is one)."
    ),
) -> None:
    """Scan source folders or files with a trained run: findings per task, clone pairs, skipped files.

    Exit 0 when the scan ran, findings or not; --fail-on LEVEL: 1 when any result reaches LEVEL; 2: error.
    """
    from mtpeft.scan import ReportOptions

    thresholds = _checked_options(paths, fmt, threshold, fail_on)  # before the model loads: fail fast
    cuts = _precision_cuts(run_dir, precision, threshold, _names(tasks)) if precision is not None else []
    thresholds = replace(thresholds, per_task={c.task: c.choice.threshold for c in cuts})
    if out is not None:
        _check_out(out, paths)
    result = _scan(
        paths,
        run_dir,
        _names(tasks),
        exclude,
        default_excludes,
        _names(languages),
        max_tokens,
        clones,
        batch_size,
        progress,
        device,
    )
    result.notes += [c.note(precision, "validation") for c in cuts if precision is not None]
    if result.info.get("calibration") == "uncalibrated":  # a run trained before calibration existed
        result.notes.append(f"run uncalibrated: raw softmax probabilities (mtpeft calibrate {run_dir})")
    result.include_unfamiliar = include_unfamiliar
    result.notes += _familiarity_notes(result, run_dir)
    options = ReportOptions(thresholds=thresholds, include_code=include_code)
    _write(result, fmt, out, options)
    if out is not None or fmt != "table":  # the table already ends with these lines
        for line in result.summary():
            typer.echo(_shown(line), err=True)
    if out is not None:
        typer.echo(f"{fmt} report written to {_shown(out)}", err=True)
    if fail_on is not None:
        reached = _count_at_or_above(result, thresholds, fail_on)
        if reached:
            typer.echo(f"{reached} result(s) at level {fail_on} or above (--fail-on {fail_on})", err=True)
            raise typer.Exit(1)


def _shown(text: object) -> str:
    """User text (paths, notes) for the terminal: control characters and undecodable bytes as \\xNN."""
    from mtpeft.report.console import printable
    from mtpeft.scan.units import readable

    return printable(readable(str(text)))


def _check_out(out: Path, scanned: list[Path]) -> None:
    """Refuse an --out that cannot be written or would replace a scanned file, before hours of scanning."""
    from mtpeft.outputs import refuse_overwriting_inputs
    from mtpeft.scan.languages import language_for

    if out.is_dir():
        raise InputError(f"--out {_shown(out)} is a folder; give a file name for the report")
    if not out.parent.is_dir():
        folder = _shown(out.parent)
        raise InputError(f"--out {_shown(out)}: the folder {folder} does not exist; create it first")
    folders = [path for path in scanned if path.is_dir()]
    for folder in folders:
        inside = out.resolve().is_relative_to(folder.resolve())
        if inside and out.exists() and language_for(out.name) is not None:
            raise InputError(
                f"--out {_shown(out)} is a source file of the tree being scanned; write the report elsewhere"
            )
    refuse_overwriting_inputs(out, [path for path in scanned if not path.is_dir()])


def _familiarity_notes(result: ScanResult, run_dir: Path) -> list[str]:
    from mtpeft.calibration_file import NO_OOD

    if result.info.get("ood") == NO_OOD:  # an older run: every unit is reported, none is checked
        return [
            f"run has {NO_OOD}: no unit is checked for being unlike the training data "
            f"(mtpeft calibrate {run_dir})"
        ]
    return result.unfamiliar_notes()


def _names(values: list[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _checked_options(paths: list[Path], fmt: str, threshold: str | None, fail_on: str | None) -> Thresholds:
    from mtpeft.scan import Thresholds

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fail_on is not None and fail_on not in LEVELS:
        raise InputError(f"--fail-on {fail_on!r}: choose one of {', '.join(LEVELS)}")
    for path in paths:
        if not path.exists():
            raise InputError(f"{_shown(path)}: no such file or folder to scan")
    try:
        return Thresholds.parse(threshold) if threshold else Thresholds()
    except ValueError as err:
        raise InputError(f"--threshold: {err}") from None


def _precision_cuts(run_dir: Path, precision: float, threshold: str | None, tasks: list[str]) -> list:
    """--precision's threshold per task, from the run's stored validation outputs (no model loaded)."""
    from mtpeft.calibration_file import precision_cuts

    if threshold is not None:
        raise InputError(
            "give --precision or --threshold, not both: --precision chooses each task's threshold"
        )
    return precision_cuts(run_dir, precision, tasks or None)


def _scan(
    paths: list[Path],
    run_dir: Path,
    tasks: list[str],
    exclude: list[str],
    default_excludes: bool,
    languages: list[str],
    max_tokens: int | None,
    clones: bool,
    batch_size: int,
    progress: bool,
    device: str | None,
) -> ScanResult:
    from mtpeft.api import load
    from mtpeft.scan import scan_tree

    if progress:
        typer.echo(f"loading {_shown(run_dir)} ...", err=True)
    run = load(run_dir, device=device, batch_size=batch_size)
    try:
        with run.reusing_encodings():  # the clone search re-reads units the analysis encoded
            return scan_tree(
                paths,
                run,
                tasks=tasks or None,
                exclude=exclude,
                use_default_excludes=default_excludes,
                languages=languages or None,
                max_tokens=max_tokens,
                batch_size=batch_size,
                clones=clones,
                progress=progress,
            )
    except ValueError as err:  # an unknown task or language: the user's choice, not a bug
        raise InputError(str(err)) from None


def _write(result: ScanResult, fmt: str, out: Path | None, options: object) -> None:
    from mtpeft.scan import save_report, write_report

    if out is None:
        write_report(result, fmt, sys.stdout, options)  # type: ignore[arg-type]
        sys.stdout.flush()
        return
    try:
        save_report(result, fmt, out, options)  # type: ignore[arg-type]
    except OSError as err:
        raise InputError(f"--out {_shown(out)}: cannot write the report ({err.strerror or err})") from None


def _count_at_or_above(result: ScanResult, thresholds: Thresholds, level: str) -> int:
    worst = LEVELS.index(level)
    found = sum(1 for f in result.findings(thresholds) if LEVELS.index(f.level) <= worst)
    clones = sum(1 for p in result.clone_pairs if LEVELS.index(result.clone_level(p, thresholds)) <= worst)
    return found + clones
