"""`inspect_task` / `mtpeft data inspect`: the findings a user relies on before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.cli.main import app
from mtpeft.data.inspect import inspect_task, normalise_code
from mtpeft.errors import ModelLoadError
from mtpeft.tasks import get_task

runner = CliRunner()

CLEAN = {
    "train": [
        ("int add(int a, int b) { return a + b; }", 0),
        ("int sub(int a, int b) { return a - b; }", 1),
        ("void copy(char *d, char *s) { strcpy(d, s); }", 1),
        ("int mul(int a, int b) { return a * b; }", 0),
    ],
    "valid": [("int neg(int a) { return -a; }", 0), ("void f(char *s) { gets(s); }", 1)],
    "test": [("int sq(int a) { return a * a; }", 0), ("void g(char *p) { free(p); free(p); }", 1)],
}


def write_devign(root: Path, splits: dict[str, list[tuple[str, int]]]) -> Path:
    """Devign jsonl files; ids are `<split>-<row>` so findings can be checked by id."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        lines = [
            json.dumps(
                {"func": code, "target": label, "project": "p", "commit_id": "c", "idx": f"{split}-{i}"}
            )
            for i, (code, label) in enumerate(rows)
        ]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def planted(**extra: list[tuple[str, int]]) -> dict[str, list[tuple[str, int]]]:
    splits = {name: list(rows) for name, rows in CLEAN.items()}
    for split, rows in extra.items():
        splits[split] += rows
    return splits


def test_clean_data_reports_counts_balance_lengths_and_no_findings(tmp_path):
    report = inspect_task(get_task("py-defect"), write_devign(tmp_path / "d", CLEAN))
    assert {name: s.count for name, s in report.splits.items()} == {"train": 4, "valid": 2, "test": 2}
    assert report.splits["train"].labels == {"0": 2, "1": 2}
    assert report.splits["train"].positive_rate == 0.5
    # "int add(int a, int b) { return a + b; }" is 16 regex tokens
    assert report.splits["train"].lengths.max == max(
        len(normalise_code(c).split()) for c, _ in CLEAN["train"]
    )
    assert report.leakage_count == 0
    assert report.conflicts.count == 0
    assert all(s.exact_duplicates.count == s.near_duplicates.count == 0 for s in report.splits.values())
    assert "regex" in report.tokenizer


def test_planted_cross_split_duplicate_and_label_conflict_are_found_with_ids(tmp_path):
    # The train function appears again in test, reformatted and with the other label.
    leaked = ("int add(int a,int b){\n    return a+b;\n}", 1)
    report = inspect_task(get_task("py-defect"), write_devign(tmp_path / "d", planted(test=[leaked])))
    assert report.leakage["train->test"].count == 1
    assert report.leakage["train->test"].examples == [["train-0", "test-2"]]
    assert report.leakage["train->valid"].count == report.leakage["valid->test"].count == 0
    assert report.conflicts.count == 1
    assert report.conflicts.examples == [["train:train-0=0", "test:test-2=1"]]
    summary = report.summary()
    assert summary["leakage"] == 1 and summary["conflicts"] == 1


def test_whitespace_only_difference_is_a_near_duplicate_not_an_exact_one(tmp_path):
    near = ("int  sub(int a, int b)\n{\n\treturn a - b;\n}", 1)
    exact = ("int neg(int a) { return -a; }", 0)
    report = inspect_task(
        get_task("py-defect"), write_devign(tmp_path / "d", planted(train=[near], valid=[exact]))
    )
    train, valid = report.splits["train"], report.splits["valid"]
    assert (train.exact_duplicates.count, train.near_duplicates.count) == (0, 1)
    assert train.near_duplicates.examples == [["train-1", "train-4"]]
    assert (valid.exact_duplicates.count, valid.near_duplicates.count) == (1, 0)
    assert train.duplicate_rate == pytest.approx(1 / 5)


def test_pairs_are_unordered_for_duplicates(tmp_path):
    root = tmp_path / "clone"
    root.mkdir()
    funcs = {"1": "def a(x): return x", "2": "def b(y): return y + 1", "3": "def c(): pass"}
    (root / "data.jsonl").write_text(
        "".join(json.dumps({"func": f, "idx": i}) + "\n" for i, f in funcs.items())
    )
    (root / "train.txt").write_text("1\t2\t1\n2\t1\t1\n1\t3\t0\n")
    (root / "test.txt").write_text("3\t1\t0\n")
    report = inspect_task(get_task("py-clone"), root)
    assert report.splits["train"].exact_duplicates.count == 1
    assert report.leakage["train->test"].count == 1  # (3, 1) is the train pair (1, 3)


def test_report_is_json_serialisable(tmp_path):
    report = inspect_task(get_task("py-defect"), write_devign(tmp_path / "d", CLEAN))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["splits"]["test"]["lengths"]["p95"] > 0
    assert set(report.summary()["splits"]["train"]) >= {
        "count",
        "positive_rate",
        "duplicate_rate",
        "p50_len",
        "p95_len",
    }


def test_hf_tokenizer_by_model_short_name(tmp_path):
    root = write_devign(tmp_path / "d", CLEAN)
    try:
        report = inspect_task(get_task("py-defect"), root, tokenizer="minilm")
    except ModelLoadError as err:
        pytest.skip(f"minilm not installed: {err}")
    assert report.tokenizer.startswith("minilm")
    regex = inspect_task(get_task("py-defect"), root)
    assert report.splits["train"].lengths.max != regex.splits["train"].lengths.max


def test_cli_prints_findings_and_writes_json(tmp_path):
    leaked = ("int add(int a,int b){ return a+b; }", 1)
    root = write_devign(tmp_path / "d", planted(test=[leaked]))
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["data", "inspect", "py-defect", str(root), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "leak train->test" in result.output and "train-0, test-2" in result.output
    assert json.loads(out.read_text())["leakage_count"] == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["no-such-task", "."], "unknown task 'no-such-task'"),
        (["py-defect", "/no/such/folder"], "/no/such/folder: data folder does not exist"),
        (
            ["py-defect", "DATA", "--tokenizer", "/no/such/tokenizer"],
            "cannot load tokenizer '/no/such/tokenizer'",
        ),
    ],
)
def test_cli_bad_input_is_one_line_error(tmp_path, args, expected):
    root = write_devign(tmp_path / "d", CLEAN)
    args = [str(root) if a == "DATA" else a for a in args]
    result = runner.invoke(app, ["data", "inspect", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
