"""`mtpeft export` on the command line: what it prints, and a prefix-tuning run refused by name."""

from __future__ import annotations

import json
import sys

import pytest


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from mtpeft.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mtpeft", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capsys.readouterr().err


def test_a_prefix_tuning_run_is_refused_by_name_and_nothing_is_written(
    prefix_run, tmp_path, monkeypatch, capsys
):
    code, err = _cli(monkeypatch, capsys, "export", prefix_run, "--out", tmp_path / "out")
    assert code == 2
    assert "this run cannot be exported: method 'prefix' cannot be exported" in err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a scratch folder beside it


def test_export_prints_each_tasks_agreement_on_the_examples_asked_for(ia3_cli_export):
    folder, err = ia3_cli_export
    meta = json.loads((folder / "export.json").read_text())
    assert {r["examples"] for r in meta["agreement"]["fp32"].values()} == {5}
    for task in ("vulnerability", "complexity", "clone", "code-search"):
        assert f"fp32 {task}: 5/5 same" in err
    assert "ia3 (merged into the weights) with 4 tasks" in err


def test_an_unknown_format_or_quantization_is_refused_before_any_work(ia3_run, tmp_path, monkeypatch, capsys):
    code, err = _cli(monkeypatch, capsys, "export", ia3_run, "--out", tmp_path / "x", "--format", "tflite")
    assert code == 2 and "--format 'tflite': choose one of onnx" in err
    code, err = _cli(monkeypatch, capsys, "export", ia3_run, "--out", tmp_path / "x", "--quantize", "int4")
    assert code == 2 and "--quantize 'int4': choose int8" in err
    assert not (tmp_path / "x").exists()
