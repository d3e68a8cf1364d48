"""Which files of a data folder are its splits: none is an error naming the folder and the expected
names, two files for one split are refused as ambiguous (issue 24, item 13). Before, `data inspect` of the
wrong folder exited 0 with empty tables, and `train.jsonl` silently won over `train.jsonl.gz`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.cli.main import app
from mtpeft.data.formats import load_split
from mtpeft.errors import DataError
from mtpeft.tasks import get_task

runner = CliRunner()


def _rows(split: str, n: int = 3) -> str:
    records = [
        {"func": f"int f{i}() {{ return {i}; }}", "target": i % 2, "idx": f"{split}-{i}"} for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in records)


def _inspect(root: Path):
    return runner.invoke(app, ["data", "inspect", "py-defect", str(root)])


@pytest.mark.parametrize("contents", [{}, {"README.md": "notes", "train.csv": "a,b\n", "data": None}])
def test_a_folder_without_split_files_is_an_error_naming_folder_and_expected_files(tmp_path, contents):
    root = tmp_path / "wrong-folder"
    root.mkdir()
    for name, text in contents.items():
        (root / name).mkdir() if text is None else (root / name).write_text(text)
    result = _inspect(root)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {root}: no split file found")
    assert "<split>.jsonl" in result.stderr and "train, valid or test" in result.stderr
    assert "examples" not in result.stdout  # no empty tables


@pytest.mark.parametrize(
    ("plain", "compressed"),
    [("train.jsonl", "train.jsonl.gz"), ("valid.jsonl", "valid.jsonl.gz")],
)
def test_two_files_for_one_split_are_refused_naming_both(tmp_path, plain, compressed):
    root = tmp_path / "d"
    root.mkdir()
    split = plain.split(".")[0]
    (root / "test.jsonl").write_text(_rows("test"))
    (root / plain).write_text(_rows(split))
    (root / compressed).write_bytes(gzip.compress(_rows(split, 5).encode()))
    result = _inspect(root)
    assert result.exit_code == 2, result.output
    assert f"'{plain}' and '{compressed}'" in result.stderr and "ambiguous" in result.stderr
    # Training reads through the same listing: it refuses too, not only inspect.
    with pytest.raises(DataError, match="ambiguous"):
        load_split(get_task("py-defect"), root, "test")


def test_one_file_per_split_in_either_spelling_is_read(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "train.jsonl.gz").write_bytes(gzip.compress(_rows("train", 4).encode()))
    (root / "test.jsonl").write_text(_rows("test"))
    result = _inspect(root)
    assert result.exit_code == 0, result.output
    assert len(load_split(get_task("py-defect"), root, "train")) == 4
