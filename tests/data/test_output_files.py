"""The files `mtpeft data` writes (inspect --json, build-default's splits): never over a data file the
command reads, never left half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.cli.main import app
from mtpeft.data.default_suite import writers

runner = CliRunner()
ROWS = {"train": ["int a(int x) { return x; }"], "valid": ["int b(int x) { return -x; }"], "test": ["int c;"]}


def _devign(root: Path) -> Path:
    root.mkdir(parents=True)
    for split, codes in ROWS.items():
        lines = [json.dumps({"func": c, "target": 0, "idx": f"{split}-{i}"}) for i, c in enumerate(codes)]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("spelling", ["plain", "dotdot", "hardlink"])
def test_inspect_refuses_a_json_report_over_one_of_its_data_files(tmp_path, spelling):
    root = _devign(tmp_path / "d")
    before = (root / "train.jsonl").read_bytes()
    out = {
        "plain": root / "train.jsonl",
        "dotdot": root / ".." / "d" / "train.jsonl",
        "hardlink": tmp_path / "h",
    }
    if spelling == "hardlink":
        os.link(root / "train.jsonl", out["hardlink"])
    result = runner.invoke(app, ["data", "inspect", "py-defect", str(root), "--json", str(out[spelling])])
    assert result.exit_code == 2 and "is the input" in result.output and "train.jsonl" in result.output
    assert (root / "train.jsonl").read_bytes() == before


def test_inspect_writes_its_json_report_whole(tmp_path):
    root = _devign(tmp_path / "d")
    out = tmp_path / "reports" / "r.json"  # its folder is made, as before
    result = runner.invoke(app, ["data", "inspect", "py-defect", str(root), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["task"] == "py-defect"
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_a_split_file_whose_writing_stops_keeps_the_previous_one(tmp_path):
    split = tmp_path / "py-defect" / "train.jsonl"
    split.parent.mkdir()
    split.write_text("previous build\n")

    def lines():
        yield "first"
        raise KeyboardInterrupt  # Ctrl-C mid-build

    with pytest.raises(KeyboardInterrupt):
        writers._write_lines(split, lines())
    assert split.read_text() == "previous build\n" and [p.name for p in split.parent.iterdir()] == [
        "train.jsonl"
    ]
