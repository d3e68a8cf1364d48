"""`mtpeft export` and the inference commands on the command line, through the real entry point: what
export prints, runs refused by name (prefix tuning, a generative task), and `predict` over an export."""

from __future__ import annotations

import io
import json
import sys

import pytest


def _cli(monkeypatch, capsys, *args, stdin: bytes = b"") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `mtpeft ARGS...`."""
    from mtpeft.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mtpeft", *map(str, args)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_a_prefix_tuning_run_is_refused_by_name_and_nothing_is_written(
    prefix_run, tmp_path, monkeypatch, capsys
):
    code, _, err = _cli(monkeypatch, capsys, "export", prefix_run, "--out", tmp_path / "out")
    assert code == 2
    assert "this run cannot be exported: method 'prefix' cannot be exported" in err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a scratch folder beside it


def test_a_generative_run_is_refused_naming_the_task(generative_run, tmp_path, monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "export", generative_run, "--out", tmp_path / "out")
    assert code == 2
    message = err.split("error:")[1]
    assert "task 'repair' (generation) is generative" in message and "'vulnerability'" not in message
    assert list(tmp_path.iterdir()) == []


def test_export_prints_each_tasks_agreement_on_the_examples_asked_for(ia3_cli_export):
    folder, err = ia3_cli_export
    meta = json.loads((folder / "export.json").read_text())
    assert {r["examples"] for r in meta["agreement"]["fp32"].values()} == {5}
    for task in ("vulnerability", "complexity", "clone", "code-search"):
        assert f"fp32 {task}: 5/5 same" in err
    assert "ia3 (merged into the weights) with 4 tasks" in err


def test_an_unknown_format_or_quantization_is_refused_before_any_work(ia3_run, tmp_path, monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "export", ia3_run, "--out", tmp_path / "x", "--format", "tflite")
    assert code == 2 and "--format 'tflite': choose one of onnx" in err
    code, _, err = _cli(monkeypatch, capsys, "export", ia3_run, "--out", tmp_path / "x", "--quantize", "int4")
    assert code == 2 and "--quantize 'int4': choose int8" in err
    assert not (tmp_path / "x").exists()


def test_predict_through_the_export_answers_as_through_the_run(lora_run, lora_export, monkeypatch, capsys):
    lines = b'{"code": "def f(x): return eval(x)"}\n{"code": "x = 1", "code_b": "y = 2"}\n'
    rows = []
    for target in (lora_run, lora_export):
        code, out, _ = _cli(monkeypatch, capsys, "predict", target, "-", stdin=lines)
        assert code == 0
        rows.append(
            [{t: p["label"] for t, p in json.loads(line)["predictions"].items()} for line in out.splitlines()]
        )
    assert rows[1] == rows[0] and set(rows[0][0]) == {"vulnerability", "complexity"}
