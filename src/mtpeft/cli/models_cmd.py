"""`mtpeft models`: the shipped model short names, what they are and where their weights come from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mtpeft.models.registry import ModelEntry


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models() -> None:
    """List the model short names (any Hugging Face hub id or local model folder works too)."""
    from rich.table import Table

    from mtpeft.models.registry import MODELS
    from mtpeft.report.console import console, plain

    table = Table(title="Models (pass a short name, a hub id or a local folder as `model:`)")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("architecture", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("model")
    table.add_column("weights from")
    for entry in MODELS.values():
        cells = (entry.name, entry.architecture, _parameters(entry), entry.description, entry.source)
        table.add_row(*(plain(c) for c in cells))
    console.print(table)


def _parameters(entry: ModelEntry) -> str:
    """Counted from file headers or shapes, never by loading (or converting) the weights."""
    from mtpeft.errors import MtpeftError

    try:
        count = entry.parameter_count() if entry.parameter_count else None
    except MtpeftError as err:  # e.g. the package shipping the weights is not installed
        return f"unavailable: {err}"
    return "unknown" if count is None else format_count(count)


def format_count(count: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)
