"""`mtpeft export RUN_DIR --out DIR`: the run as one ONNX graph that answers every task without PyTorch.

What the folder holds and how it is checked: mtpeft/export/. The export itself needs the training stack
(`mtpeft[train]`, plus `onnx` and `onnxscript` for PyTorch's exporter: the `export` extra); using the
folder needs only `mtpeft[onnx]`. Progress and the per-task agreement go to stderr.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mtpeft.errors import InputError

FORMATS = ("onnx",)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run_dir: Path = typer.Argument(..., help="A trained run directory (workspace/runs/...)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="The folder to write (new, empty, or an earlier export)."
    ),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only one so far)."),
    quantize: str | None = typer.Option(
        None, "--quantize", help="int8: dynamic int8 quantization of the weights (smaller, faster, checked)."
    ),
    check_examples: int = typer.Option(
        256, "--check-examples", min=1, help="Test examples per task the graph is checked on against the run."
    ),
) -> None:
    """Export a trained run to ONE ONNX graph (every task from one pass) with its tokenizer and manifest.

    LoRA, DoRA and IA3 are merged into the weights; adapters stay in the graph; prefix and prompt tuning,
    MTL-LoRA and generative or instruct tasks are refused. The graph is checked against the run on its
    test split: fp32 must give the same labels (probabilities within 1e-4) or nothing is written; int8
    reports its agreement and metric change per task. Use the folder with `mtpeft scan --run DIR`,
    `mtpeft predict DIR`, `mtpeft serve DIR` or `mtpeft.load(DIR)`, with only `pip install 'mtpeft[onnx]'`.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory (expected workspace/runs/<run>)")
    from mtpeft.extras import require

    # Before minutes of work: the training stack, PyTorch's ONNX exporter, and the runtime that checks it.
    needed = ("torch", "transformers", "peft", "onnx", "onnxscript", "onnxruntime", "tokenizers")
    require(needed, "mtpeft export", " (everything `mtpeft export` needs: pip install 'mtpeft[export]')")
    from mtpeft.export.build import describe, export_run

    typer.echo(f"exporting {run_dir} ...", err=True)
    result = export_run(run_dir, out, quantize=quantize, check_examples=check_examples)
    for line in describe(result):
        typer.echo(line, err=True)
