"""`mtpeft evaluate RUN --data TASK=PATH` on data unlike the run's (Python functions and random token
strings; the tiny run knows C, Java and clone pairs of Java): ECE before/after the run's temperature, the
precision reached at the threshold chosen on validation (checked by hand from the written files), the OOD
AUROC against the run's own test split, an unreachable target recorded, an uncalibrated run saying so, and
all of it in `mtpeft evaluations` and the report. Copies of the session's tiny run, never the run itself."""

from __future__ import annotations

import ast
import json
import random
import shutil
import sysconfig
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy.special import softmax
from scipy.stats import beta
from typer.testing import CliRunner

from mtpeft import layout
from mtpeft.calibration_file import CALIBRATION_DIR, read_calibration, write_calibration
from mtpeft.cli.main import app
from mtpeft.evaluation import other_data
from mtpeft.report.build import build_report
from mtpeft.store import RunStore

TARGET = other_data.DEFAULT_PRECISION  # 0.9: reached on the tiny run's validation split by both tasks


def _python_functions(limit: int = 40) -> list[str]:
    """Real Python: functions of a few standard library modules (another language than the run's)."""
    functions = []
    for module in ("json/decoder.py", "json/encoder.py", "textwrap.py", "shlex.py"):
        source = (Path(sysconfig.get_paths()["stdlib"]) / module).read_text(encoding="utf-8")
        nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
        functions += [ast.get_source_segment(source, n) or "" for n in nodes]
    return functions[:limit]


def _random_tokens(tokenizer, count: int) -> list[str]:
    rng = random.Random(0)
    ids = [[rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(10, 40))] for _ in range(count)]
    return [text for text in tokenizer.batch_decode(ids) if text.strip()]


def _devign_folder(folder: Path, codes: list[str]) -> Path:
    """A vulnerability test set in the run's format (devign-jsonl): only test.jsonl, labels alternating."""
    folder.mkdir(parents=True)
    rows = [{"func": code, "target": i % 2, "idx": i} for i, code in enumerate(codes)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def _clone_folder(folder: Path, codes: list[str]) -> Path:
    """A clone test set in the run's format (bigclonebench): pairs of Python functions."""
    folder.mkdir(parents=True)
    functions = [{"func": code, "idx": str(5000 + i)} for i, code in enumerate(codes)]
    (folder / "data.jsonl").write_text("".join(json.dumps(f) + "\n" for f in functions), encoding="utf-8")
    pairs = [f"{5000 + i}\t{5000 + (i + 1) % len(codes)}\t{i % 2}\n" for i in range(len(codes))]
    (folder / "test.txt").write_text("".join(pairs), encoding="utf-8")
    return folder


def _copy(run_dir: Path, root: Path) -> Path:
    """The run's whole workspace (its store included), copied; returns the copy's run directory."""
    shutil.copytree(run_dir.parent.parent, root / "ws")
    return root / "ws" / layout.RUNS_DIR / run_dir.name


def _evaluate(run_dir: Path, *args: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mtpeft.report.console.console", Console(width=250))
        done = CliRunner().invoke(app, ["evaluate", str(run_dir), *args, "--no-baselines", "--no-progress"])
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    return done.output


def _records(run_dir: Path) -> dict[str, object]:
    """The store's evaluations of the copy, by the name of their data folder."""
    store = RunStore(layout.store_path(run_dir.parent.parent))
    return {Path(e.data_path).name: e for e in store.list_evaluations()}


@pytest.fixture(scope="module")
def evaluated(run, run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("other-data")
    copy = _copy(run_dir, root)
    python, tokens = _python_functions(), _random_tokens(run.tokenizer, 40)
    folders = {
        "vulnerability": _devign_folder(root / "python", python),
        "clone": _clone_folder(root / "python-pairs", python[:20]),
        "vulnerability-random": _devign_folder(root / "random-tokens", tokens),
    }
    data = [f"{task.split('-')[0]}={path}" for task, path in folders.items()]
    out = _evaluate(copy, *(arg for item in data for arg in ("--data", item)))  # the default target
    return {"run_dir": copy, "out": out, "records": _records(copy), "root": root}


def test_ece_before_and_after_the_runs_temperature_on_other_data(evaluated):
    record = evaluated["records"]["python"]
    part = record.details["calibration"]
    stored = read_calibration(evaluated["run_dir"]).tasks["vulnerability"]
    assert part["calibrated"] is True and part["temperature"] == pytest.approx(stored.temperature)
    assert part["examples"] == record.n_examples == 40
    for name in ("ece", "nll"):
        assert part[f"{name}_before"] >= 0 and part[f"{name}_after"] >= 0
    # ECE before by hand from the written logits: 15 bins of top-label confidence, as evaluate measures it
    rows = _probability_rows(record)
    logits, gold = np.asarray([r["logits"] for r in rows]), np.asarray([r["gold"] for r in rows])
    assert part["ece_before"] == pytest.approx(_ece(softmax(logits, axis=1), gold))
    assert part["ece_after"] == pytest.approx(_ece(softmax(logits / stored.temperature, axis=1), gold))
    assert f"ECE (15 bins), T = 1 -> T = {stored.temperature:.3g}" in evaluated["out"]
    assert f"{part['ece_before']:.3f} -> {part['ece_after']:.3f}" in evaluated["out"]


def _ece(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> float:
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == gold
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return sum(
        np.mean(index == b) * abs(correct[index == b].mean() - confidence[index == b].mean())
        for b in range(bins)
        if (index == b).any()
    )


def _probability_rows(record) -> list[dict]:
    path = Path(record.predictions_dir) / f"{record.task}.probabilities.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("folder", ["python", "python-pairs"])
def test_precision_reached_at_the_validation_threshold_matches_a_hand_count(evaluated, folder):
    record = evaluated["records"][folder]
    part = record.details["precision"]
    calibration = read_calibration(evaluated["run_dir"])
    stored = calibration.tasks[record.task]
    choice = calibration.precision_threshold(record.task, TARGET)  # what `scan --precision 0.9` flags at
    assert part["reachable"] and part["threshold"] == choice.threshold and part["target"] == TARGET
    assert part["valid"]["precision"] == choice.precision >= TARGET
    # By hand, from the written logits and the gold labels of the official answers file
    rows = _probability_rows(record)
    answers = (
        Path(record.predictions_dir) / f"{record.task}.answers.{'jsonl' if folder == 'python' else 'txt'}"
    )
    gold_written = [
        json.loads(line)["target"] if folder == "python" else int(line.split("\t")[2])
        for line in answers.read_text().splitlines()
    ]
    assert [r["gold"] for r in rows] == gold_written
    probs = softmax(np.asarray([r["logits"] for r in rows]) / stored.temperature, axis=1)[:, stored.positive]
    flagged, positive = probs >= choice.threshold, np.asarray(gold_written) == stored.positive
    hits, count = int((flagged & positive).sum()), int(flagged.sum())
    assert (part["flagged"], part["true_positives"], part["positives"]) == (count, hits, int(positive.sum()))
    assert part["recall"] == pytest.approx(hits / positive.sum())
    if count:
        assert part["precision"] == pytest.approx(hits / count)
        low = beta.ppf(0.025, hits, count - hits + 1) if hits else 0.0
        high = beta.ppf(0.975, hits + 1, count - hits) if hits < count else 1.0
        assert part["precision_ci"] == pytest.approx([low, high])
    else:
        assert part["precision"] is None and part["precision_ci"] is None
    assert f"threshold for precision {TARGET:g} (valid)" in evaluated["out"]


def test_ood_auroc_separates_other_language_and_random_tokens_from_the_own_test_split(evaluated):
    for folder in ("python", "random-tokens"):
        part = evaluated["records"][folder].details["ood"]
        assert part["default"] == "knn" and part["own_split"] == "test"
        assert list(part["scores"])[0] == "knn" and set(part["scores"]) == {"knn", "mahalanobis"}
        assert part["own_snippets"] == 24  # the vulnerability test split as the run configured it
        assert part["scores"]["knn"]["auroc"] > 0.9, (folder, part)
        assert part["scores"]["knn"]["other_beyond"] > part["scores"]["knn"]["own_beyond"]
    pairs = evaluated["records"]["python-pairs"].details["ood"]
    assert pairs["other_snippets"] == 20 and "both functions of each pair" in pairs["snippets"]
    assert pairs["own_snippets"] == 48  # 24 pairs of two distinct functions each
    assert "OOD knn (default): AUROC, own test vs this data" in evaluated["out"]


def test_evaluations_list_and_report_show_calibration_precision_and_ood(evaluated, tmp_path):
    run_dir = evaluated["run_dir"]
    workspace = run_dir.parent.parent
    record = evaluated["records"]["python"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mtpeft.report.console.console", Console(width=400))
        listed = CliRunner().invoke(app, ["evaluations", "--workspace", str(workspace)])
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if "/python " in line + " ")
    assert other_data.ece_summary(record.details) in line
    assert other_data.precision_summary(record.details) in line
    assert other_data.ood_summary(record.details) in line

    files = build_report(workspace, tmp_path / "report")
    markdown, html = files.markdown.read_text(), files.html.read_text()
    assert "## Out-of-distribution and calibration on other data" in markdown
    row = next(
        line
        for line in markdown.splitlines()
        if line.startswith("| ") and f"| {record.data_path} |" in line and "knn" in line
    )
    part = record.details
    assert f"| {part['calibration']['ece_before']:.3f} |" in row
    assert f"| {part['precision']['threshold']:.4f} |" in row
    assert f"{part['ood']['scores']['knn']['auroc']:.3f} (knn)" in row
    assert "<h2>Out-of-distribution and calibration on other data</h2>" in html


def test_an_unreachable_target_is_recorded_not_a_failure(evaluated, tmp_path):
    """A validation split without a positive example reaches no precision at any threshold."""
    run_dir = _copy(evaluated["run_dir"], tmp_path)
    calibration = read_calibration(run_dir)
    vulnerability = calibration.tasks["vulnerability"]
    negatives = replace(vulnerability, gold=[0] * len(vulnerability.gold))
    write_calibration(run_dir, replace(calibration, tasks=calibration.tasks | {"vulnerability": negatives}))

    out = _evaluate(run_dir, "--data", f"vulnerability={evaluated['root'] / 'python'}", "--precision", "0.8")

    details = _records(run_dir)["python"].details
    assert details["precision"] == {
        "target": 0.8,
        "split": "valid",
        "positive_label": vulnerability.labels[1],
        "reachable": False,
        "best_reachable": 0.0,
        "valid_positives": 0,
    }
    assert "unreachable: best valid precision 0.000" in out
    assert details["calibration"]["calibrated"] and details["ood"]["scores"]  # the rest still measured


def test_an_uncalibrated_run_says_so(evaluated, tmp_path):
    run_dir = _copy(evaluated["run_dir"], tmp_path)
    shutil.rmtree(run_dir / CALIBRATION_DIR)  # as trained before calibration existed

    out = _evaluate(run_dir, "--data", f"vulnerability={evaluated['root'] / 'python'}")

    record = _records(run_dir)["python"]
    calibration = record.details["calibration"]
    assert calibration["calibrated"] is False and calibration["temperature"] == 1.0
    assert calibration["ece_after"] == calibration["ece_before"]
    assert "uncalibrated" in record.details["precision"]["skipped"]
    assert "no out-of-distribution statistics" in record.details["ood"]["skipped"]
    assert "ECE (15 bins), T = 1 -> uncalibrated" in out and "precision: uncalibrated" in out
    assert other_data.ece_summary(record.details).endswith("(uncalibrated)")
    markdown = build_report(run_dir.parent.parent, tmp_path / "report").markdown.read_text()
    row = next(line for line in markdown.splitlines() if "| uncalibrated |" in line)
    assert row.endswith("| uncalibrated" + " | -" * 6 + " |"), row  # no threshold, precision, recall, OOD
    assert "vulnerability on" in markdown and "ood: the run has no out-of-distribution statistics" in markdown
