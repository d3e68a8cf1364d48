"""`mtpeft evaluate RUN --data TASK=PATH`: a tiny trained run scored on a folder holding only a test file,
stored as an evaluation, shown in the report beside the in-distribution score; run directories evaluate
from any working directory; bad requests give one located error and record nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

import mtpeft
from mtpeft import layout
from mtpeft.cli.main import app
from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import ConfigError, DataError, MtpeftError
from mtpeft.evaluation import on_data
from mtpeft.evaluation.on_data import DataRequest, evaluate_on_data
from mtpeft.report.build import build_report
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

SRC = str(Path(mtpeft.__file__).resolve().parents[1])
N_ONES, N_ZEROS = 30, 10  # the test-only folder is imbalanced: its majority label scores 0.75


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny run trained with RELATIVE data and workspace paths, from its own working directory."""
    root = tmp_path_factory.mktemp("project")
    write_fixture_dataset("devign-jsonl", root / "data", n_per_split=32)
    write_fixture_dataset("codesearchnet", root / "data", n_per_split=32)
    config = {
        "name": "tiny",
        "model": "tiny-bert",
        "lr": 5e-3,
        "tasks": [
            {"task": "vulnerability", "data": "data/devign-jsonl", "max_length": 64},
            {"task": "code-search", "data": "data/codesearchnet", "max_length": 64},
        ],
        "max_steps": 8,
        "eval_every": 8,
        "save_every": 8,
        "workspace": "ws",
    }
    before = Path.cwd()
    os.chdir(root)
    try:
        result = run_training(validate_config(config), progress=False)[0]
    finally:
        os.chdir(before)
    return {"root": root, "run_dir": (root / result.run_dir).resolve(), "workspace": root / "ws"}


def _test_only_folder(parent: Path) -> Path:
    """Another dataset of the vulnerability format: only test.jsonl, 30 vulnerable and 10 safe functions."""
    source = write_fixture_dataset("devign-jsonl", parent / "source", n_per_split=2 * N_ONES, seed=7)
    rows = [json.loads(line) for line in (source / "test.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["target"] == 1][:N_ONES] + [r for r in rows if r["target"] == 0][:N_ZEROS]
    folder = parent / "only-test"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return folder


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "mtpeft.cli.main", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _md_row(markdown: str, first_cell: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {first_cell}"))


# ---- the whole path: CLI from another directory, store, prediction files, report ---------------------
def test_evaluate_scores_a_test_only_folder_stores_it_and_the_report_shows_it(trained, tmp_path, monkeypatch):
    run_dir, workspace = trained["run_dir"], trained["workspace"]
    other = _test_only_folder(tmp_path / "cross-project")
    own_predictions = _snapshot(run_dir / "predictions" / "test")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = _cli(["evaluate", str(run_dir), "--data", f"vulnerability={other}", "--no-progress"], elsewhere)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "recorded in" in done.stdout and "only-test" in done.stdout
    store = RunStore(workspace / "mtpeft.sqlite")
    run = store.list_runs()[0]
    [evaluation] = store.list_evaluations()
    assert (evaluation.run_id, evaluation.task, evaluation.split) == (run.run_id, "vulnerability", "test")
    assert evaluation.data_path == str(other.resolve())
    assert (evaluation.n_examples, evaluation.max_examples) == (N_ONES + N_ZEROS, None)  # the whole split
    assert evaluation.metric == "accuracy" and set(evaluation.metrics) == {"accuracy", "f1", "mcc"}
    low, high = evaluation.interval
    assert 0.0 <= low <= evaluation.score <= high <= 1.0
    # Majority of THAT data (30 of 40 are vulnerable), TF-IDF trained on the run's own train split.
    assert evaluation.baselines["majority"]["accuracy"] == pytest.approx(N_ONES / (N_ONES + N_ZEROS))
    assert 0.0 <= evaluation.baselines["tfidf"]["accuracy"] <= 1.0 and evaluation.notes == []

    # Official files in their own folder; the run's in-distribution ones are untouched.
    folder = Path(evaluation.predictions_dir)
    assert folder.parent.name.startswith("vulnerability@only-test-") and folder.name == "test"
    assert folder.parent.parent == run_dir / "predictions"
    lines = (folder / "vulnerability.predictions.txt").read_text().splitlines()
    assert len(lines) == N_ONES + N_ZEROS and all(line.split("\t")[1] in ("0", "1") for line in lines)
    answers = [json.loads(line) for line in (folder / "vulnerability.answers.jsonl").read_text().splitlines()]
    assert sum(a["target"] for a in answers) == N_ONES
    written = json.loads((folder / layout.EVALUATION_FILE).read_text())  # as the store holds it
    assert (written["data_path"], written["eval_id"]) == (str(other.resolve()), evaluation.eval_id)
    assert _snapshot(run_dir / "predictions" / "test") == own_predictions

    # `mtpeft evaluations` lists it (on a console wide enough to keep the path on one line).
    monkeypatch.setattr("mtpeft.report.console.console", Console(width=400))
    listed = CliRunner().invoke(app, ["evaluations", "--workspace", str(workspace)])
    assert listed.exit_code == 0 and "only-test" in listed.stdout and "vulnerability" in listed.stdout

    # The report puts it beside the run's own test score, in Markdown and HTML.
    files = build_report(workspace, tmp_path / "report")
    markdown, html = files.markdown.read_text(), files.html.read_text()
    in_distribution = run.metrics["test"]["vulnerability"]["accuracy"]
    assert "## Out-of-distribution evaluations" in markdown
    row = _md_row(markdown, f"{run.name} ({run.run_id[:8]}) | vulnerability")
    assert f"| {in_distribution:.3f} [" in row  # bootstrap CI from the run's per-example file
    assert f"| {evaluation.score:.3f} [{low:.3f}, {high:.3f}] |" in row
    assert f"| {other.resolve()} | test | 40 |" in row and "| 0.750 |" in row
    assert f"{evaluation.score - in_distribution:+.3f}" in row
    assert "<h2>Out-of-distribution evaluations</h2>" in html
    assert f"<td>{evaluation.score:.3f} [{low:.3f}, {high:.3f}]</td>" in html
    assert f"<td>{in_distribution:.3f} [" in html


def test_a_run_directory_evaluates_from_any_working_directory(trained, tmp_path, monkeypatch):
    from mtpeft.evaluation.run_eval import evaluate_run

    run_dir = trained["run_dir"]
    saved = yaml.safe_load((run_dir / layout.CONFIG_FILE).read_text())
    assert all(Path(t["data"]).is_absolute() for t in saved["tasks"])  # trained with relative paths
    stored = RunStore(trained["workspace"] / "mtpeft.sqlite").list_runs()[0].metrics["test"]
    monkeypatch.chdir(tmp_path)  # nothing of the project is reachable relative to here
    again, _ = evaluate_run(run_dir, "test", baselines=False, progress=False)
    assert again == stored


def test_an_older_run_with_relative_paths_resolves_them_where_it_was_trained(trained, tmp_path, monkeypatch):
    """Runs saved before run directories were self-contained hold paths relative to where training ran."""
    copy = tmp_path / "project"
    shutil.copytree(trained["root"], copy)
    run_dir = copy / "ws" / "runs" / trained["run_dir"].name
    config = yaml.safe_load((run_dir / layout.CONFIG_FILE).read_text())
    config["workspace"] = "ws"
    for entry in config["tasks"]:
        entry["data"] = str(Path("data") / Path(entry["data"]).name)
    (run_dir / layout.CONFIG_FILE).write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    loaded = layout.load_run_config(run_dir)
    assert [t.data for t in loaded.tasks] == [
        str(copy / "data" / "devign-jsonl"),
        str(copy / "data" / "codesearchnet"),
    ]


# ---- whole own splits, subsets, a missing train split --------------------------------------------
def test_max_examples_scores_the_runs_own_data_as_evaluations(trained, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(trained["workspace"], workspace)
    run_dir = workspace / "runs" / trained["run_dir"].name
    own = _snapshot(run_dir / "predictions" / "test")
    run = on_data.open_run(run_dir)
    store = RunStore(workspace / "mtpeft.sqlite")
    before = len(store.list_evaluations())

    whole = evaluate_on_data(run_dir, on_data.own_data_requests(run, "test", None), baselines=False)
    subset = evaluate_on_data(run_dir, on_data.own_data_requests(run, "valid", 10), baselines=False)

    assert [(e.task, e.n_examples) for e in whole.evaluations] == [("vulnerability", 32), ("code-search", 32)]
    assert [(e.split, e.n_examples, e.max_examples) for e in subset.evaluations] == [("valid", 10, 10)] * 2
    assert len(store.list_evaluations()) == before + 4
    assert all("@" in Path(e.predictions_dir).parent.name for e in whole.evaluations + subset.evaluations)
    assert _snapshot(run_dir / "predictions" / "test") == own


def test_tfidf_is_skipped_with_a_note_when_the_runs_train_data_is_gone(trained, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(trained["workspace"], workspace)
    run_dir = workspace / "runs" / trained["run_dir"].name
    config = yaml.safe_load((run_dir / layout.CONFIG_FILE).read_text())
    config["tasks"][0]["data"] = str(tmp_path / "moved-away")
    (run_dir / layout.CONFIG_FILE).write_text(yaml.safe_dump(config))
    other = _test_only_folder(tmp_path / "other")

    outcome = evaluate_on_data(run_dir, [DataRequest("vulnerability", other)])

    [evaluation] = outcome.evaluations
    assert outcome.store == workspace / "mtpeft.sqlite" and set(evaluation.baselines) == {"majority"}
    assert "TF-IDF baseline skipped" in evaluation.notes[0] and "moved-away" in evaluation.notes[0]
    markdown = build_report(workspace, tmp_path / "report").markdown.read_text()
    row = next(line for line in markdown.splitlines() if f"| {other} |" in line)
    assert row.endswith("| 0.750 | skipped |") and "TF-IDF baseline skipped" in markdown


@pytest.mark.usefixtures("shared_data")
def test_a_real_test_file_alone_is_scored(trained, tmp_path, shared_data):
    """devign-sysevr's test.jsonl on its own (no train or valid file): a cross-dataset evaluation."""
    folder = tmp_path / "sysevr-test-only"
    folder.mkdir()
    shutil.copy(shared_data / "devign-sysevr" / "test.jsonl", folder / "test.jsonl")
    workspace = tmp_path / "ws"
    shutil.copytree(trained["workspace"], workspace)
    run_dir = workspace / "runs" / trained["run_dir"].name

    outcome = evaluate_on_data(run_dir, [DataRequest("vulnerability", folder, max_examples=200)])

    [evaluation] = outcome.evaluations
    assert (evaluation.n_examples, evaluation.max_examples) == (200, 200)
    assert evaluation.interval[0] <= evaluation.score <= evaluation.interval[1]


# ---- errors: one located message, nothing recorded -----------------------------------------------
def _bad_line_folder(parent: Path) -> Path:
    folder = parent / "bad"
    folder.mkdir()
    (folder / "test.jsonl").write_text('{"func": "int f();", "target": 0, "idx": 1}\n{"func": \n')
    return folder


def _train_only_folder(parent: Path) -> Path:
    folder = parent / "train-only"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"func": "int f();", "target": 0, "idx": 1}\n')
    return folder


VULN = "vulnerability"
ERRORS = {
    "unknown task": (lambda p: DataRequest("vuln", p), ConfigError, ["no task 'vuln'", f"{VULN}, code"]),
    "missing folder": (lambda p: DataRequest(VULN, p / "nope"), DataError, ["does not exist", "nope"]),
    "a file": (lambda p: DataRequest(VULN, _bad_line_folder(p) / "test.jsonl"), DataError, ["is a file"]),
    "no such split": (lambda p: DataRequest(VULN, _train_only_folder(p)), DataError,
                      ["train-only", "split 'test' is missing (found: train)"]),
    "unreadable": (lambda p: DataRequest(VULN, _bad_line_folder(p)), DataError, ["test.jsonl, line 2"]),
}  # fmt: skip


@pytest.mark.parametrize("case", ERRORS)
def test_bad_requests_fail_with_one_located_error_and_record_nothing(trained, tmp_path, case):
    make, error, fragments = ERRORS[case]
    before = _snapshot(trained["run_dir"] / "predictions")
    store = RunStore(trained["workspace"] / "mtpeft.sqlite")
    count = len(store.list_evaluations())
    with pytest.raises(error) as raised:
        evaluate_on_data(trained["run_dir"], [make(tmp_path)])
    assert all(fragment in str(raised.value) for fragment in fragments), str(raised.value)
    assert len(store.list_evaluations()) == count
    assert _snapshot(trained["run_dir"] / "predictions") == before


def test_cli_errors_are_one_line_without_traceback(trained, tmp_path):
    args = ["evaluate", str(trained["run_dir"]), "--data", f"flaky={tmp_path}", "--no-progress"]
    done = _cli(args, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "no task 'flaky'" in done.stderr
    assert "vulnerability, code-search" in done.stderr


@pytest.mark.parametrize(
    ("text", "expected"), [("all", None), ("ALL", None), ("25", 25), ("0", MtpeftError), ("x", MtpeftError)]
)
def test_max_examples_values(text, expected):
    if expected is MtpeftError:
        with pytest.raises(MtpeftError, match="--max-examples '.*': give 'all' or a positive whole number"):
            on_data.parse_max_examples(text)
    else:
        assert on_data.parse_max_examples(text) == expected


def test_data_option_needs_task_equals_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert on_data.parse_data_option("clone=some/dir") == ("clone", tmp_path / "some" / "dir")
    with pytest.raises(MtpeftError, match="--data 'some/dir': give TASK=PATH"):
        on_data.parse_data_option("some/dir")
