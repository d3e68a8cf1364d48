"""Empty or whitespace-only code is refused by one rule (data.example.blank_text_problem) that the data
readers, `mtpeft predict` and the Python API share (issue 24, item 14; predict and the API are tested in
tests/api). Before, predict answered blank code while the readers and the server refused it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtpeft.data.example import blank_text_problem
from mtpeft.data.formats import load_split
from mtpeft.errors import DataError
from mtpeft.tasks import get_task


@pytest.mark.parametrize(
    ("text", "blank"), [("", True), (" \t\n", True), ("\u2003\u3000", True), (" x ", False)]
)
def test_the_rule(text, blank):
    assert (blank_text_problem(text) is not None) is blank


def _task(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(f"name: t\nkind: {kind}\nformat: jsonl\nlabels: ['0', '1']\nmetrics: [f1]\n")
    return path


@pytest.mark.parametrize(
    ("kind", "record", "field"),
    [
        ("binary", {"code": "\u2003\n", "label": "0"}, "code"),  # Unicode whitespace only
        ("pair", {"code": "int a;", "code_b": "\t", "label": "1"}, "code_b"),
    ],
)
def test_readers_refuse_blank_code_in_every_role_with_line_and_field(tmp_path, kind, record, field):
    root = tmp_path / "d"
    root.mkdir()
    good = (
        {"code": "int b;", "code_b": "int c;", "label": "0"}
        if kind == "pair"
        else {"code": "int b;", "label": "1"}
    )
    (root / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError) as caught:
        load_split(get_task(_task(tmp_path, kind)), root, "train")
    assert caught.value.line == 2 and caught.value.field == field
    assert caught.value.reason.startswith("is empty (only whitespace)")
