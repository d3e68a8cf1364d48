"""Output formats of a scan, in a registry: ``FORMATS[name](result, out, options)``.

table  rich table for a terminal; every user-supplied string (paths, names, reasons) goes through
       :func:`_shown`: a ``rich.text.Text`` (so ``[red]`` in a file name or ``:smile:`` in a function
       name is printed as written) with terminal controls as ``\\xNN`` (so ``ESC[2J`` in a name
       cannot clear the screen) and undecodable file-name bytes as ``\\xNN`` (units.readable).
json   the stable schema below, for scripts.
sarif  SARIF 2.1.0 (sarif.py).
html   one self-contained page, findings grouped by file (html_report.py).

JSON schema, version ``mtpeft.scan/1`` (fields are only ever added within a version)::

    {
      "schema": "mtpeft.scan/1",
      "tool": {"name": "mtpeft", "version": "0.1.0"},
      "root": "/abs/path/scanned",
      "run": {...},                       # the analyzer's info (run dir, model, ...)
      "max_tokens": 256,
      "thresholds": {"error": 0.9, "warning": 0.7, "note": 0.5},
      "tasks": [{"name", "kind", "base", "labels": [...], "applies_to": [...], "positive_labels": [...]}],
      "units": [{"id": 0, "path": "src/a.py", "language": "python", "name": "Cls.meth",
                 "kind": "function|method|test", "start_line", "start_column", "end_line", "end_column",
                 "hash": "16 hex", "truncated": false,
                 "answers": {"<task>": {"label": "1", "probability": 0.93,
                                        "positive_probability": 0.93 | null, "level": "error" | null}},
                 "code": "..."}],          # "code" only with ReportOptions(include_code=True)
      "findings": [{"unit": 0, "task": "vulnerability", "label": "1", "probability": 0.93, "level": "error"}],
      "clone_pairs": [{"a": 3, "b": 9, "similarity": 0.97, "probability": 0.91 | null,
                       "exact": false, "level": "error"}],
      "skipped": [{"path": "bin/x.c", "reason": "binary file (NUL bytes)"}],
      "summary": {"files", "units", "functions", "methods", "tests", "skipped", "truncated",
                  "clone_pairs", "exact_duplicates"},
      "timings": {"extract": 1.2, "tokens": 0.1, "analyze": 3.4, "clones": 0.5, "total": 5.3},
      "notes": ["..."]
    }

Paths hold file names as the file system has them: bytes that are not UTF-8 are shown as ``\\xNN``
(units.readable), in every format; the SARIF URIs carry the exact bytes, percent-encoded.

``save_report`` writes through ``mtpeft.outputs.atomic_output``: the file named is replaced only
once the whole report is written, so a failure leaves the previous report (or no file), never a
truncated one.

``probability`` is always that of the positive class (finding) or of the predicted label
(``answers[*].probability``); ``level`` follows result.Thresholds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mtpeft import __version__
from mtpeft.outputs import atomic_output
from mtpeft.report.console import printable
from mtpeft.scan.analyzer import positive_probability
from mtpeft.scan.html_report import write_html
from mtpeft.scan.result import ScanResult, Thresholds
from mtpeft.scan.sarif import write_sarif
from mtpeft.scan.units import json_text, readable

JSON_SCHEMA_VERSION = "mtpeft.scan/1"


@dataclass(frozen=True)
class ReportOptions:
    thresholds: Thresholds = field(default_factory=Thresholds)
    include_code: bool = False  # json: put each unit's code in the output
    width: int | None = None  # table: console width (None: the terminal's, 120 for files)


Writer = Callable[[ScanResult, TextIO, ReportOptions], None]


def write_report(result: ScanResult, fmt: str, out: TextIO, options: ReportOptions | None = None) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    FORMATS[fmt](result, out, options or ReportOptions())


def save_report(
    result: ScanResult, fmt: str, path: str | os.PathLike[str], options: ReportOptions | None = None
) -> None:
    # Atomic: the report is complete before it replaces anything at `path`.
    with atomic_output(path) as out:
        write_report(result, fmt, out, options)


# ------------------------------------------------------------------------------------------ json


def to_json(result: ScanResult, options: ReportOptions | None = None) -> dict[str, Any]:
    options = options or ReportOptions()
    th = options.thresholds
    truncated = set(result.truncated)
    return {
        "schema": JSON_SCHEMA_VERSION,
        "tool": {"name": "mtpeft", "version": __version__},
        "root": str(result.root),
        "run": dict(result.info),
        "max_tokens": result.max_tokens,
        "thresholds": {"error": th.error, "warning": th.warning, "note": th.note}
        | ({"per_task": dict(th.per_task)} if th.per_task else {}),
        "tasks": [_task_json(t) for t in result.tasks.values()],
        "units": [_unit_json(result, i, i in truncated, options) for i in range(len(result.units))],
        "findings": [
            {
                "unit": f.unit_index,
                "task": f.task.name,
                "label": f.answer.label,
                "probability": f.probability,
                "level": f.level,
            }
            for f in result.findings(th)
        ],
        "clone_pairs": [
            {
                "a": p.a,
                "b": p.b,
                "similarity": p.similarity,
                "probability": p.probability,
                "exact": p.exact,
                "level": result.clone_level(p, th),
            }
            for p in result.clone_pairs
        ],
        "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
        "summary": _summary_json(result),
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "notes": list(result.notes),
    }


def _task_json(task: Any) -> dict[str, Any]:
    return {
        "name": task.name,
        "kind": task.kind,
        "base": task.base,
        "labels": list(task.labels),
        "applies_to": sorted(task.unit_kinds),
        "positive_labels": sorted(task.positives),
    }


def _unit_json(result: ScanResult, index: int, truncated: bool, options: ReportOptions) -> dict[str, Any]:
    unit = result.units[index]
    answers = {}
    for name, answer in result.answers[index].items():
        p = positive_probability(result.tasks[name], answer)
        answers[name] = {
            "label": answer.label,
            "probability": answer.probability,
            "positive_probability": p,
            "level": options.thresholds.for_task(name).level(p),
        }
    row: dict[str, Any] = {
        "id": index,
        "path": unit.path,
        "language": unit.language,
        "name": unit.name,
        "kind": unit.kind,
        "start_line": unit.start_line,
        "start_column": unit.start_column,
        "end_line": unit.end_line,
        "end_column": unit.end_column,
        "hash": unit.content_hash,
        "truncated": truncated,
        "answers": answers,
    }
    if index in result.unfamiliar:
        row["unfamiliar"] = {"ood_score": result.unfamiliar[index]}
    if options.include_code:
        row["code"] = unit.code
    return row


def _summary_json(result: ScanResult) -> dict[str, int]:
    exact = sum(1 for p in result.clone_pairs if p.exact)
    return {
        "files": result.files,
        "units": len(result.units),
        "functions": sum(1 for u in result.units if u.kind == "function"),
        "methods": sum(1 for u in result.units if u.kind == "method"),
        "tests": sum(1 for u in result.units if u.kind == "test"),
        "skipped": len(result.skipped),
        "truncated": len(result.truncated),
        "clone_pairs": len(result.clone_pairs) - exact,
        "exact_duplicates": exact,
        "unfamiliar": len(result.unfamiliar),
    }


def write_json(result: ScanResult, out: TextIO, options: ReportOptions) -> None:
    out.write(json_text(to_json(result, options)) + "\n")


# ----------------------------------------------------------------------------------------- table

_LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}
_RANK = {"error": 0, "warning": 1, "note": 2}


def _shown(text: object, style: str = "") -> Text:
    """User text for the terminal, shown as written: never markup, never a control sequence."""
    return Text(printable(readable(str(text))), style=style)


def write_table(result: ScanResult, out: TextIO, options: ReportOptions) -> None:
    width = options.width or (None if out.isatty() else 120)
    # markup/emoji off: nothing the user's code contains is ever interpreted, even outside the tables.
    console = Console(file=out, width=width, markup=False, emoji=False, highlight=False)
    # Most severe first: on a terminal the top rows are the ones read.
    findings = sorted(result.findings(options.thresholds), key=lambda f: (_RANK[f.level], -f.probability))
    if findings:
        table = Table(title=f"Findings ({len(findings)})", title_justify="left")
        for column in ("level", "probability", "task", "location", "unit"):
            table.add_column(column, justify="right" if column == "probability" else "left")
        for f in findings:
            table.add_row(
                Text(f.level, style=_LEVEL_STYLE[f.level]),
                Text(f"{f.probability:.2f}"),
                _shown(f.task.name),
                _shown(f.unit.location),
                _shown(f"{f.unit.name} ({f.unit.kind})"),
            )
        console.print(table)
    else:
        console.print(Text("No findings at or above the note threshold."))
    _clone_table(console, result, options)
    _skipped_table(console, result)
    for line in result.summary():
        console.print(_shown(line))  # notes may quote names


def _clone_table(console: Console, result: ScanResult, options: ReportOptions) -> None:
    if not result.clone_pairs:
        return
    table = Table(title=f"Clone pairs ({len(result.clone_pairs)})", title_justify="left")
    for column in ("level", "similarity", "probability", "first", "second"):
        table.add_column(column)
    for p in result.clone_pairs:
        a, b = result.units[p.a], result.units[p.b]
        level = result.clone_level(p, options.thresholds)
        table.add_row(
            Text(level, style=_LEVEL_STYLE[level]),
            Text(f"{p.similarity:.2f}"),
            Text("exact" if p.exact else f"{p.probability:.2f}"),
            _shown(f"{a.name} {a.location}"),
            _shown(f"{b.name} {b.location}"),
        )
    console.print(table)


def _skipped_table(console: Console, result: ScanResult) -> None:
    if not result.skipped:
        return
    table = Table(title=f"Skipped files ({len(result.skipped)})", title_justify="left")
    table.add_column("path")
    table.add_column("reason")
    for s in result.skipped:
        table.add_row(_shown(s.path), _shown(s.reason))
    console.print(table)


def _write_sarif(result: ScanResult, out: TextIO, options: ReportOptions) -> None:
    write_sarif(result, out, options.thresholds)


def _write_html(result: ScanResult, out: TextIO, options: ReportOptions) -> None:
    write_html(result, out, options.thresholds)


FORMATS: dict[str, Writer] = {
    "table": write_table,
    "json": write_json,
    "sarif": _write_sarif,
    "html": _write_html,
}
