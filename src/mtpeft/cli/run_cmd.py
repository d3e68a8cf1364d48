"""`mtpeft train | evaluate | runs | demo`: training runs and their results."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
