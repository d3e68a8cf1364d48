"""A damaged export folder is one clear error naming the file, before onnxruntime ever reads it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtpeft.errors import DamagedFiles


@pytest.fixture
def copy(lora_export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(lora_export, tmp_path / "export"))


def _load(folder: Path):
    import mtpeft

    return mtpeft.load(folder)


def test_a_missing_tokenizer_is_named(copy):
    (copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(DamagedFiles, match=r"tokenizer/tokenizer\.json: missing") as err:
        _load(copy)
    assert "mtpeft export RUN_DIR --out" in str(err.value)


def test_a_changed_graph_is_a_checksum_mismatch(copy):
    graph = copy / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit flipped, same size
    graph.write_bytes(bytes(data))
    with pytest.raises(DamagedFiles, match=r"model\.onnx: checksum mismatch"):
        _load(copy)


def test_a_missing_graph_is_still_an_export_folder_and_named(copy):
    (copy / "model.onnx").unlink()
    with pytest.raises(DamagedFiles, match=r"model\.onnx: missing"):
        _load(copy)


def test_an_edited_export_json_is_refused(copy):
    path = copy / "export.json"
    path.write_text(path.read_text().replace('"fp32"', '"fp16"'))
    with pytest.raises(DamagedFiles, match=r"export\.json: (size|checksum)"):
        _load(copy)


def test_the_cli_reports_a_damaged_folder_as_one_error_line(copy, tmp_path, capsys, monkeypatch):
    import sys

    from mtpeft.cli.main import main

    (copy / "pair_heads.npz").unlink()
    (tmp_path / "a.py").write_text("def f(x):\n    return eval(x)\n")
    monkeypatch.setattr(sys, "argv", ["mtpeft", "scan", str(tmp_path / "a.py"), "--run", str(copy)])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.splitlines()[-1]]
    assert "pair_heads.npz: missing" in err and "Traceback" not in err
