"""`mtpeft data ...`: formats, tasks, inspect, build-default."""

from __future__ import annotations

import typer

from mtpeft.cli import data_build_cmd, data_formats_cmd

app = typer.Typer(no_args_is_help=True)
data_formats_cmd.register(app)
data_build_cmd.register(app)
