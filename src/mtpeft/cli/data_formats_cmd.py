"""`mtpeft data formats` and `mtpeft data tasks`: what can be read, and which tasks are built in."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("formats")(formats)
    app.command("tasks")(tasks)


def formats() -> None:
    """List the data format readers and the files each one expects."""
    from mtpeft.data.formats import FORMATS

    table = Table(title="Data formats (use as `format:` in a task YAML)")
    table.add_column("format", style="bold cyan", no_wrap=True)
    table.add_column("expected files")
    for name in sorted(FORMATS):
        table.add_row(escape(name), escape(FORMATS[name].description))  # text, never console markup
    Console().print(table)


def tasks() -> None:
    """List the built-in tasks (a task YAML path works wherever a task name does)."""
    from mtpeft.tasks import builtin_tasks

    table = Table(title="Built-in tasks")
    for column in ("task", "kind", "format", "labels", "primary metric", "trainable"):
        table.add_column(column, no_wrap=column in ("task", "format"))
    for spec in sorted(builtin_tasks().values(), key=lambda spec: spec.name):
        labels = ", ".join(spec.labels) if spec.labels else "-"
        trainable = "yes" if spec.trainable else "no"
        row = (spec.name, spec.kind, spec.format, labels, spec.primary, trainable)
        table.add_row(*map(escape, row))  # task YAMLs are user text: `[x]` in a label is not markup
    Console().print(table)
