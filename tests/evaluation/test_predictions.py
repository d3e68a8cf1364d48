"""Prediction files score the same under CodeXGLUE's evaluators as under compute_metrics.

The `_read_*` / `_score_*` functions re-implement how microsoft/CodeXGLUE's evaluators read and score
(Code-Code/Defect-detection, Code-Code/Clone-detection-BigCloneBench and Text-Code/NL-code-search-Adv,
evaluator/evaluator.py): keys, int() conversions, field names and MRR truncation as they do them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from mtpeft.data.example import Example
from mtpeft.data.formats.base import load_split
from mtpeft.evaluation.baselines import ranks_from_scores
from mtpeft.evaluation.metrics import compute_metrics
from mtpeft.evaluation.predictions import TOP_K, write_predictions
from mtpeft.tasks.registry import get_task
from mtpeft.tasks.spec import TaskSpec


# ---- the evaluators' reading, as CodeXGLUE does it --------------------------------------------------
def _defect_accuracy(answers_file: Path, predictions_file: Path) -> float:
    answers = {}
    for line in answers_file.read_text().splitlines():
        record = json.loads(line.strip())
        answers[record["idx"]] = record["target"]
    predictions = {}
    for line in predictions_file.read_text().splitlines():
        idx, label = line.strip().split()
        predictions[int(idx)] = int(label)
    return float(np.mean([answers[key] == predictions[key] for key in answers]))


def _read_pairs(path: Path) -> dict[tuple[str, str], int]:
    pairs = {}
    for line in path.read_text().splitlines():
        idx1, idx2, label = line.strip().split()
        pairs[(idx1, idx2)] = int(label)
    return pairs


def _clone_scores(answers_file: Path, predictions_file: Path) -> dict[str, float]:
    answers, predictions = _read_pairs(answers_file), _read_pairs(predictions_file)
    y_true = [answers[key] for key in answers]
    y_pred = [predictions[key] for key in answers]
    return {"recall": recall_score(y_true, y_pred), "precision": precision_score(y_true, y_pred),
            "f1": f1_score(y_true, y_pred)}  # fmt: skip


def _advtest_mrr(answers_file: Path, predictions_file: Path) -> float:
    answers = {}
    for line in answers_file.read_text().splitlines():
        record = json.loads(line.strip())
        answers[record["url"]] = record["idx"]
    predictions = {}
    for line in predictions_file.read_text().splitlines():
        record = json.loads(line.strip())
        predictions[record["url"]] = record["answers"]
    scores = []
    for url, gold in answers.items():
        ranked = predictions[url]
        scores.append(1 / (ranked.index(gold) + 1) if gold in ranked else 0)
    return round(float(np.mean(scores)), 4)


# ---- synthetic examples ------------------------------------------------------------------------------
def _labelled(n: int, seed: int, *, ids: list[str] | None = None) -> tuple[list[Example], list[int]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    ids = ids or [str(100 + i) for i in range(n)]
    examples = [Example(id=i, code="f ( ) ;", label=int(y)) for i, y in zip(ids, labels, strict=True)]
    return examples, rng.integers(0, 2, n).tolist()


def _y_true(examples: list[Example]) -> list[int]:
    return [int(e.label) for e in examples]  # type: ignore[arg-type]


def test_defect_file_scores_as_compute_metrics(tmp_path):
    task = get_task("vulnerability")
    examples, y_pred = _labelled(50, 0)
    path = write_predictions(task, examples, {"y_pred": y_pred}, tmp_path)
    assert path.name == "vulnerability.predictions.txt"
    assert path.read_text().splitlines()[0] == f"100\t{y_pred[0]}"
    expected = compute_metrics(["accuracy"], y_true=_y_true(examples), y_pred=y_pred)["accuracy"]
    assert _defect_accuracy(tmp_path / "vulnerability.answers.jsonl", path) == pytest.approx(expected)


def test_defect_file_with_non_numeric_ids_still_reads(tmp_path):
    # The evaluator int()s every idx; ids like "chrome_12" are replaced by positions in both files.
    task = get_task("vulnerability")
    examples, y_pred = _labelled(20, 1, ids=[f"chrome_{i}" for i in range(20)])
    path = write_predictions(task, examples, {"y_pred": y_pred}, tmp_path)
    expected = compute_metrics(["accuracy"], y_true=_y_true(examples), y_pred=y_pred)["accuracy"]
    assert _defect_accuracy(tmp_path / "vulnerability.answers.jsonl", path) == pytest.approx(expected)


def test_clone_file_scores_as_compute_metrics(tmp_path):
    task = get_task("clone")
    examples, y_pred = _labelled(60, 2)
    examples = [Example(id=e.id, id_b=f"9{e.id}", code="a", code_b="b", label=e.label) for e in examples]
    path = write_predictions(task, examples, {"y_pred": y_pred}, tmp_path)
    assert path.read_text().splitlines()[0] == f"100\t9100\t{y_pred[0]}"
    expected = compute_metrics(["f1", "precision", "recall"], y_true=_y_true(examples), y_pred=y_pred)
    assert _clone_scores(tmp_path / "clone.answers.txt", path) == pytest.approx(expected)


def _search_examples(n: int) -> list[Example]:
    return [
        Example(id=str(7000 + i), code=f"c{i}", query=f"q{i}", meta={"url": f"repo/{i}"}) for i in range(n)
    ]


def test_code_search_file_scores_as_compute_metrics(tmp_path):
    task = get_task("code-search")
    examples = _search_examples(80)
    scores = np.random.default_rng(0).normal(size=(80, 80)) + 2 * np.eye(80)
    path = write_predictions(task, examples, {"scores": scores}, tmp_path)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["url"] == "repo/0" and len(first["answers"]) == 80 and isinstance(first["answers"][0], int)
    expected = compute_metrics(["mrr"], ranks=ranks_from_scores(scores))["mrr"]
    assert _advtest_mrr(tmp_path / "code-search.answers.jsonl", path) == round(expected, 4)


def test_code_search_file_keeps_the_top_100_like_advtest(tmp_path):
    task = get_task("code-search")
    n = 150
    examples = _search_examples(n)
    scores = np.random.default_rng(1).normal(size=(n, n))  # near-random: many correct codes rank > 100
    path = write_predictions(task, examples, {"scores": scores}, tmp_path)
    assert {len(json.loads(line)["answers"]) for line in path.read_text().splitlines()} == {TOP_K}
    full = compute_metrics(["mrr"], ranks=ranks_from_scores(scores))["mrr"]
    official = _advtest_mrr(tmp_path / "code-search.answers.jsonl", path)
    assert official <= full < official + 0.01  # ranks beyond 100 count 0 there, 1/rank < 0.01 here


def test_generic_files_for_other_tasks(tmp_path):
    task = TaskSpec(name="cx", kind="multiclass", format="jsonl", labels=["O(1)", "O(n)", "O(n^2)"],
                    metrics=["accuracy"])  # fmt: skip
    examples = [Example(id=f"e{i}", code="x", label=i % 3) for i in range(3)]
    path = write_predictions(task, examples, {"y_pred": [0, 0, 2]}, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[1] == {"id": "e1", "y_true": "O(n)", "y_pred": "O(1)"}

    summary = get_task("summarization")
    examples = [Example(id="s0", code="x", target="closes a file")]
    path = write_predictions(summary, examples, {"hypotheses": ["opens a file"]}, tmp_path)
    assert path.name == "summarization.predictions.jsonl"  # codesearchnet + generation: not AdvTest
    row = json.loads(path.read_text())
    assert row == {"id": "s0", "reference": "closes a file", "hypothesis": "opens a file"}


# ---- against the real benchmark files (the evaluators' own answers = the test data itself) -----------
@pytest.mark.shared_data
def test_files_score_against_the_original_test_data(shared_data, tmp_path):
    rng = np.random.default_rng(0)
    vulnerability = get_task("vulnerability")
    examples = load_split(vulnerability, shared_data / "reveal-chrome", "test")
    y_pred = rng.integers(0, 2, len(examples)).tolist()
    path = write_predictions(vulnerability, examples, {"y_pred": y_pred}, tmp_path)
    expected = compute_metrics(["accuracy"], y_true=_y_true(examples), y_pred=y_pred)["accuracy"]
    assert _defect_accuracy(shared_data / "reveal-chrome" / "test.jsonl", path) == pytest.approx(expected)

    clone = get_task("clone")
    examples = load_split(clone, shared_data / "bigclonebench", "test")
    y_pred = rng.integers(0, 2, len(examples)).tolist()
    path = write_predictions(clone, examples, {"y_pred": y_pred}, tmp_path)
    expected = compute_metrics(["f1"], y_true=_y_true(examples), y_pred=y_pred)["f1"]
    assert _clone_scores(shared_data / "bigclonebench" / "test.txt", path)["f1"] == pytest.approx(expected)

    search = get_task("code-search")
    examples = load_split(search, shared_data / "tlcodesum", "test")[:300]
    scores = rng.normal(size=(300, 300)) + 3 * np.eye(300)
    path = write_predictions(search, examples, {"scores": scores}, tmp_path)
    subset = tmp_path / "test-300.jsonl"  # the original records of those 300 queries
    subset.write_text("".join((shared_data / "tlcodesum" / "test.jsonl").read_text().splitlines(True)[:300]))
    expected = compute_metrics(["mrr"], ranks=ranks_from_scores(scores))["mrr"]
    assert _advtest_mrr(subset, path) == pytest.approx(expected, abs=0.01)


def test_a_prediction_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A crash while the next evaluation writes its files leaves the previous prediction file readable."""
    from mtpeft.evaluation import predictions

    task = get_task("vulnerability")
    examples, y_pred = _labelled(40, 1)
    path = write_predictions(task, examples, {"y_pred": y_pred}, tmp_path)
    before = path.read_text()

    def lines_then_crash(values):
        for number, value in enumerate(values):
            if number == 20:
                raise KeyboardInterrupt
            yield value

    real = predictions._write_lines
    monkeypatch.setattr(predictions, "_write_lines", lambda p, lines: real(p, lines_then_crash(lines)))
    with pytest.raises(KeyboardInterrupt):
        write_predictions(task, examples, {"y_pred": [1 - y for y in y_pred]}, tmp_path)
    assert path.read_text() == before and not list(tmp_path.glob(".*.tmp"))
