"""`mtpeft study | report`: experiment grids and their reports."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
