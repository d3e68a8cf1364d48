"""`mtpeft` entry point. Heavy imports (torch, transformers) happen inside the commands."""

from __future__ import annotations

import sys

import typer

from mtpeft.cli import (
    calibrate_cmd,
    data_cmd,
    export_cmd,
    group_cmd,
    index_cmd,
    lm_serve_cmd,
    merge_cmd,
    models_cmd,
    predict_cmd,
    prompt_cmd,
    run_cmd,
    scan_cmd,
    serve_cmd,
    study_cmd,
)
from mtpeft.errors import MtpeftError

app = typer.Typer(
    name="mtpeft",
    help="One language model, many code-analysis skills: multi-task PEFT, measured side by side.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data", help="Read, check and build task data.")
models_cmd.register(app)
run_cmd.register(app)
calibrate_cmd.register(app)  # temperature scaling of a trained run (mtpeft.calibration_file)
merge_cmd.register(app)  # one run from trained LoRA runs, no training (mtpeft.merging)
export_cmd.register(app)  # one ONNX graph for every task, answered without PyTorch (mtpeft.export)
study_cmd.register(app)
group_cmd.register(app)  # which tasks share a module, from cheap signals or a study's transfer
prompt_cmd.register(app)  # general LLMs prompted on the same tasks, data, metrics and store
for command in (predict_cmd, scan_cmd, index_cmd, serve_cmd):  # inference: mtpeft.load's Run behind each
    command.register(app)
lm_serve_cmd.register(app)  # a plain causal LM behind an OpenAI-compatible API (for `mtpeft prompt`)


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except MtpeftError as err:
        from mtpeft.report.console import printable  # names in messages may hold terminal escapes

        typer.secho(f"error: {printable(err)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(1)
    except ModuleNotFoundError as err:
        # The one place a package of an extra this install lacks (torch under `mtpeft[onnx]`) is reported.
        from mtpeft.extras import missing_extra

        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
        problem = missing_extra(err, f"mtpeft {command}" if command else None)
        if problem is None:
            raise
        typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as err:
        # Usage errors: typer ships its own click copy, so match on the ClickException interface.
        if hasattr(err, "show") and hasattr(err, "exit_code"):
            err.show()
            sys.exit(err.exit_code)
        raise
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
