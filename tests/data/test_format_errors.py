"""Broken input gives one DataError naming the file, the line and the field, never a traceback."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.cli.main import app
from mtpeft.data.formats import FORMATS, get_format, load_split
from mtpeft.errors import DataError
from mtpeft.tasks import builtin_tasks, get_task


def devign(idx: int, **changes: object) -> str:
    record = {
        "project": "p",
        "commit_id": "c",
        "target": 0,
        "func": f"int f{idx}() {{ return {idx}; }}",
        "idx": idx,
    }
    record.update(changes)
    return json.dumps({key: value for key, value in record.items() if value is not MISSING}) + "\n"


MISSING = object()
FLAKY_OK = '{"code": "@Test void a(){}", "label": 0, "project": "p", "test_name": "t1"},\n'
BCB_DATA = '{"func": "void one() {}", "idx": "1"}\n{"func": "void two() {}", "idx": "2"}\n'


@dataclass
class Broken:
    task: str
    files: dict[str, str | bytes]
    file: str  # the file the message must name
    line: int | None  # the line it must name (None: a whole-file problem)
    field: str | None  # the field it must name
    says: str  # what it must say is wrong
    split: str = "train"
    extra: list[str] = field(default_factory=list)  # more text the message must hold


# A table reads better one case per block.
# fmt: off
CASES = {  # one case per block: a table reads better unformatted
    "malformed-json-line": Broken(
        "vulnerability", {"train.jsonl": devign(0) + '{"func": "x", "target": 0\n'},
        file="train.jsonl", line=2, field=None, says="not valid JSON at column"),
    "missing-field": Broken(
        "vulnerability", {"train.jsonl": devign(0) + devign(1, func=MISSING)},
        file="train.jsonl", line=2, field="func", says="is missing",
        extra=["commit_id, idx, project, target"]),
    "wrong-type": Broken(
        "vulnerability", {"train.jsonl": devign(0) + devign(1) + devign(2, func=5)},
        file="train.jsonl", line=3, field="func", says="must be a string, got a JSON number"),
    "token-list-holding-a-number": Broken(
        "vulnerability", {"train.jsonl": devign(0) + devign(1, func=["int", 5, ";"])},
        file="train.jsonl", line=2, field="func", says="a list of strings, got a list holding a JSON number"),
    "empty-token-list": Broken(
        "vulnerability", {"train.jsonl": devign(0) + devign(1, func=[])},
        file="train.jsonl", line=2, field="func", says="is empty"),
    "label-outside-label-set": Broken(
        "vulnerability", {"train.jsonl": devign(0, target=2)},
        file="train.jsonl", line=1, field="target", says="label 2 is not in the label set ['0', '1']"),
    "label-wrong-type": Broken(
        "complexity", {"train.jsonl": '{"code": "x", "label": {"n": 1}}\n'},
        file="train.jsonl", line=1, field="label",
        says="label {'n': 1} is a JSON object, not one of the labels"),
    "record-not-an-object": Broken(
        "vulnerability", {"train.jsonl": devign(0) + "[1, 2]\n"},
        file="train.jsonl", line=2, field=None, says="expected a JSON object"),
    "non-utf8-bytes": Broken(
        "vulnerability",
        {"train.jsonl": devign(0).encode() + b'{"func": "char c = \'\xff\';", "target": 0}\n'},
        file="train.jsonl", line=2, field="func", says="byte 0xff at byte offset 20 of the line"),
    "empty-file": Broken(
        "vulnerability", {"train.jsonl": "\n\n"},
        file="train.jsonl", line=None, field=None, says="file is empty"),
    "duplicate-id": Broken(
        "vulnerability", {"train.jsonl": devign(4) + devign(5) + devign(4, func="int g() {}")},
        file="train.jsonl", line=3, field="idx", says="duplicate id '4'", extra=["first at line 1"]),
    "empty-code": Broken(
        "vulnerability", {"train.jsonl": devign(0) + devign(1, func="   ")},
        file="train.jsonl", line=2, field="func", says="is empty"),
    "bcb-unknown-id": Broken(
        "clone", {"data.jsonl": BCB_DATA, "train.txt": "1\t2\t1\n2\t3\t0\n"},
        file="train.txt", line=2, field="idx2", says="function id '3' is not in data.jsonl"),
    "bcb-label-outside-label-set": Broken(
        "clone", {"data.jsonl": BCB_DATA, "train.txt": "1\t2\tyes\n"},
        file="train.txt", line=1, field="label", says="not in the label set"),
    "bcb-function-file-missing": Broken(
        "clone", {"train.txt": "1\t2\t1\n"},
        file="data.jsonl", line=None, field=None, says="function file not found"),
    "bcb-duplicate-function-id": Broken(
        "clone",
        {"data.jsonl": BCB_DATA + '{"func": "void three() {}", "idx": "2"}\n', "train.txt": "1\t2\t1\n"},
        file="data.jsonl", line=3, field="idx", says="duplicate id '2'"),
    "refinement-misaligned": Broken(
        "repair", {"train.buggy-fixed.buggy": "a -\nb -\nc -\n", "train.buggy-fixed.fixed": "a +\nb +\n"},
        file="train.buggy-fixed.buggy", line=None, field=None, says="has 3 lines but",
        extra=["train.buggy-fixed.fixed has 2"]),
    "refinement-empty-line": Broken(
        "repair", {"train.buggy-fixed.buggy": "a -\nb -\n", "train.buggy-fixed.fixed": "a +\n \n"},
        file="train.buggy-fixed.fixed", line=2, field="fixed", says="empty line"),
    "json-list-is-not-a-list": Broken(
        "flaky", {"train.json": '{"code": "x", "label": 0}'},
        file="train.json", line=1, field=None, says="expected a JSON list of records, got a JSON object"),
    "json-list-record-missing-field": Broken(
        "flaky", {"train.json": f'[\n{FLAKY_OK}{FLAKY_OK.replace("t1", "t2")}'
                                '{"code": "x", "project": "p",\n "test_name": "t3"}\n]'},
        file="train.json", line=4, field="label", says="record 3: is missing"),
    "json-list-duplicate-test-name": Broken(
        "flaky", {"train.json": "[\n" + FLAKY_OK + FLAKY_OK.replace("},", "}") + "]"},
        file="train.json", line=3, field="test_name", says="duplicate id 't1'",
        extra=["first at record 1, again at record 2"]),
    "json-list-malformed": Broken(
        "flaky", {"train.json": "[\n" + FLAKY_OK + '{"code": "x" "label": 0}\n]'},
        file="train.json", line=3, field=None, says="not valid JSON"),
    "devign-json-index-out-of-range": Broken(
        "vulnerability-devign-json",
        {"function.json": json.dumps([{"func": "int a;", "target": 0}]), "train.txt": "0\n9\n"},
        file="train.txt", line=2, field=None, says="index 9 is out of range: function.json holds 1 records"),
    "devign-json-duplicate-index": Broken(
        "vulnerability-devign-json",
        {"function.json": json.dumps([{"func": "int a;", "target": 0}]), "train.txt": "0\n0\n"},
        file="train.txt", line=2, field=None, says="duplicate id '0' (first at line 1, again at line 2)"),
    "devign-json-record-wrong-type": Broken(
        "vulnerability-devign-json",
        {"function.json": '[{"func": "int a;", "target": 0},\n{"func": null, "target": 1}]',
         "train.txt": "1\n"},
        file="function.json", line=2, field="func",
        says="record at index 1: must be a string, got a JSON null"),
}
# fmt: on


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_broken_input_names_file_line_and_field(case: Broken, tmp_path):
    write_files(tmp_path, case.files)
    with pytest.raises(DataError) as caught:
        load_split(get_task(case.task), tmp_path, case.split)
    error, message = caught.value, str(caught.value)
    assert Path(error.path).name == case.file and message.startswith(str(tmp_path / case.file))
    assert error.line == case.line
    if case.line is not None:
        assert f", line {case.line}" in message
    assert error.field == case.field
    if case.field is not None:
        assert f"field '{case.field}'" in message
    for text in [case.says, *case.extra]:
        assert text in message


def test_missing_split_file_names_the_file_expected(tmp_path):
    (tmp_path / "train.jsonl").write_text(devign(0))
    with pytest.raises(DataError) as caught:
        get_format("devign-jsonl").read(tmp_path, "test", get_task("vulnerability"))
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "test.jsonl"))
    assert "split file for 'test' not found (splits present: train)" in message


def test_missing_split_through_load_split_lists_the_splits_present(tmp_path):
    (tmp_path / "train.jsonl").write_text(devign(0))
    with pytest.raises(DataError, match=r"split 'valid' is missing \(found: train\)"):
        load_split(get_task("vulnerability"), tmp_path, "valid")


def test_refinement_split_with_one_file_names_the_missing_partner(tmp_path):
    (tmp_path / "test.buggy-fixed.buggy").write_text("a -\n")
    with pytest.raises(DataError) as caught:
        load_split(get_task("repair"), tmp_path, "test")
    assert str(caught.value).startswith(str(tmp_path / "test.buggy-fixed.fixed"))


def test_cli_lists_every_format_with_its_files():
    result = CliRunner().invoke(app, ["data", "formats"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in FORMATS:
        assert name in result.output
    assert "function.json" in result.output and "idx1<TAB>idx2<TAB>label" in result.output


def test_cli_lists_every_builtin_task_with_kind_and_primary_metric():
    result = CliRunner().invoke(app, ["data", "tasks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert set(builtin_tasks()) <= set(rows)
    assert "flakeflagger-json" in rows["flaky"] and "f1" in rows["flaky"]
    assert "1, logn, n, nlogn, n_square" in rows["complexity"]
