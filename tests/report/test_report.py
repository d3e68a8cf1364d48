"""`mtpeft report`: Markdown, HTML and CSV built from the store, every time from the store."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.errors import ConfigError
from mtpeft.report.build import ReportFiles, build_report
from mtpeft.store import EvaluationRecord, RunStore
from mtpeft.study.synthetic import record_scores, synthetic_spec, synthetic_store


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    synthetic_store(synthetic_spec(workspace=root, methods=["lora", "full"], seeds=[0]))
    return root


@pytest.fixture(scope="module")
def report(workspace, tmp_path_factory) -> ReportFiles:
    """One report of the synthetic study, shared by the tests that only read it."""
    return build_report(workspace, tmp_path_factory.mktemp("report"))


def _row(markdown: str, *cells: str) -> str:
    """The first Markdown table row that starts with these cells."""
    prefix = "| " + " | ".join(cells) + " |"
    return next(line for line in markdown.splitlines() if line.startswith(prefix))


def test_report_files_are_written(report):
    files = report
    assert files.markdown.exists() and files.html.exists() and files.csv.exists()
    names = {p.name for p in files.figures}
    assert {
        "scores.png",
        "transfer-minilm-lora.png",
        "transfer-minilm-full.png",
        "score-vs-cost.png",
    } <= names
    markdown = files.markdown.read_text()
    for figure in files.figures:  # every figure is linked from the Markdown and is a real PNG
        assert f"figures/{figure.name}" in markdown
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_table_says_which_direction_is_better(report):
    markdown = report.markdown.read_text()
    captions = re.findall(r"^\*\*(.+)\*\*\n\n_(.+)_$", markdown, flags=re.MULTILINE)
    assert len(captions) >= 10
    for title, caption in captions:
        assert re.search(r"higher is better|lower is better|neither direction", caption, re.I), title


def test_changing_a_stored_metric_changes_the_report(tmp_path):
    spec = synthetic_spec(workspace=tmp_path / "ws", methods=["lora"], seeds=[0], task_sets=["single", "all"])
    store = synthetic_store(spec, per_example=False)
    before = build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text()
    single = next(r for r in store.list_runs() if r.tasks == ["py-defect"])
    old = single.metrics["test"]["py-defect"]["accuracy"]
    old_row = _row(before, "minilm / lora", "py-defect", "accuracy")
    assert f"| {old:.3f} |" in old_row

    store.set_metric(single.run_id, "test", "py-defect", "accuracy", 0.123)
    after = build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text()
    new_row = _row(after, "minilm / lora", "py-defect", "accuracy")
    assert "| 0.123 |" in new_row and new_row != old_row
    multi = next(r for r in store.list_runs() if len(r.tasks) == 3).metrics["test"]["py-defect"]["accuracy"]
    assert f"| {multi - 0.123:+.3f} |" in new_row  # the difference was recomputed too
    assert "| 0.123 |" in (tmp_path / "out" / "report.html").read_text().replace("<td>", "| ").replace(
        "</td>", " |"
    )


def test_baselines_come_from_the_newest_run(tmp_path):
    spec = synthetic_spec(workspace=tmp_path / "ws", methods=["lora"], seeds=[0], task_sets=["single", "all"])
    store = synthetic_store(spec, per_example=False)
    before = _row(build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text(), "py-defect")
    assert "| 0.987 |" not in before
    rescored = {"py-defect": {"tfidf": {"accuracy": 0.987}}}
    record_scores(store, {"py-defect": 0.6}, study=spec.name, seed=1, baselines=rescored)
    after = _row(build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text(), "py-defect")
    assert after.endswith("| 0.987 |")


def test_csv_has_one_row_per_run_split_task_metric(workspace, report):
    rows = list(csv.DictReader(report.csv.open()))
    records = RunStore(workspace / "mtpeft.sqlite").list_runs()
    expected = sum(len(m) for r in records for by_task in r.metrics.values() for m in by_task.values())
    assert len(rows) == expected
    run = records[0]
    task = run.tasks[0]
    row = next(
        x for x in rows if x["run_id"] == run.run_id and x["metric"] == "accuracy" and x["task"] == task
    )
    assert float(row["value"]) == pytest.approx(run.metrics["test"][task]["accuracy"])


def test_html_is_self_contained(report):
    html = report.html.read_text()
    assert html.count('data-kind="heatmap"') == 2 and html.count("<table>") >= 10
    assert not re.search(r"""(src|href)=["']?(https?:|//|figures/)""", html)  # no external resources
    assert html.count("data:image/png;base64,") == len(re.findall(r"<img ", html))


def test_failed_runs_are_listed_but_not_counted(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    record_scores(store, {"py-defect": 0.7}, study="s")
    record_scores(store, {"py-clone": 0.8}, study="s")
    record_scores(store, {"py-defect": 0.75, "py-clone": 0.8}, study="s")
    bad = record_scores(store, {"py-defect": 0.01, "py-clone": 0.01}, study="s", seed=1)
    store.fail_run(bad, "RuntimeError: CUDA out of memory")
    markdown = build_report(tmp_path, tmp_path / "out").markdown.read_text()
    assert "Runs that did not finish" in markdown and "CUDA out of memory" in markdown
    assert "| +0.050 |" in _row(markdown, "minilm / lora", "py-defect")
    # Once the same run finishes on a retry, the failed attempt is no longer listed as unfinished.
    record_scores(store, {"py-defect": 0.77, "py-clone": 0.8}, study="s", seed=1)
    markdown = build_report(tmp_path, tmp_path / "out").markdown.read_text()
    assert "Runs that did not finish" not in markdown and "1 failed or interrupted attempt" in markdown


def test_choosing_among_several_studies(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    record_scores(store, {"py-defect": 0.7}, study="first")
    record_scores(store, {"py-defect": 0.6}, study="second")
    with pytest.raises(ConfigError, match="first, second"):
        build_report(tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="no runs of study 'third'"):
        build_report(tmp_path, tmp_path / "out", study="third")
    text = build_report(tmp_path, tmp_path / "out", study="second").markdown.read_text()
    assert "Study report: second" in text and "py-defect 0.600" in text and "0.700" not in text


def test_report_command(workspace, tmp_path):
    from mtpeft.cli.main import app

    out = tmp_path / "cli-out"
    result = CliRunner().invoke(app, ["report", "--workspace", str(workspace), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and "report.html" in result.output


def test_grouping_says_when_plans_differ_by_less_than_the_noise(tmp_path):
    spec = synthetic_spec(workspace=tmp_path / "ws", methods=["lora"], seeds=[0])
    store = synthetic_store(spec)
    close = build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text()
    assert "the choice is within noise" in close
    # Single-task modules far worse than the shared one: the plans now differ by far more than the noise.
    for run in store.list_runs():
        if len(run.tasks) == 1:
            (task,) = run.tasks
            metric, value = next(iter(run.metrics["test"][task].items()))
            store.set_metric(run.run_id, "test", task, metric, value - 0.4)
    apart = build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text()
    assert "the choice is within noise" not in apart


def test_cost_headline_states_the_parameter_ratio_against_the_task_count(tmp_path):
    spec = synthetic_spec(workspace=tmp_path / "ws", methods=["lora"], seeds=[0], task_sets=["single", "all"])
    store = synthetic_store(spec, per_example=False)
    markdown = build_report(tmp_path / "ws", tmp_path / "out").markdown.read_text()
    line = next(x for x in markdown.splitlines() if "single / multi: shared-module parameters" in x)
    singles = [r for r in store.list_runs() if len(r.tasks) == 1]
    multi = next(r for r in store.list_runs() if len(r.tasks) == 3)
    expected = sum(r.cost["shared_params"] for r in singles) / multi.cost["shared_params"]
    assert f"parameters {expected:.2f}x (the task count is 3" in line


# ---- out-of-distribution evaluations ---------------------------------------------------------------
def _ood(run_id: str, **overrides) -> EvaluationRecord:
    fields = {
        "run_id": run_id, "task": "py-defect", "data_path": "/data/cross-project", "split": "test",
        "n_examples": 400, "max_examples": None, "metric": "accuracy", "score": 0.61,
        "interval": (0.56, 0.66), "metrics": {"accuracy": 0.61},
        "baselines": {"majority": {"accuracy": 0.55}, "tfidf": {"accuracy": 0.58}}, "notes": [],
        "predictions_dir": "/ws/runs/r/predictions/py-defect@cross-project-0a1b2c3d/test",
    } | overrides  # fmt: skip
    return EvaluationRecord(**fields)


def test_report_shows_out_of_distribution_scores_beside_the_in_distribution_one(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    run_id = record_scores(store, {"py-defect": 0.7, "py-clone": 0.8}, study="s")
    store.record_evaluation(_ood(run_id))
    gone = ["TF-IDF baseline skipped: the run's train data can no longer be read (moved)"]
    store.record_evaluation(_ood(run_id, data_path="/data/other <lang>", baselines={}, notes=gone))
    store.record_evaluation(_ood(run_id, data_path="/data/no-baselines", baselines={}))  # --no-baselines
    files = build_report(tmp_path, tmp_path / "out")
    markdown, html = files.markdown.read_text(), files.html.read_text()

    assert "## Out-of-distribution evaluations" in markdown
    first = _row(markdown, f"{store.get(run_id).name} ({run_id[:8]})", "py-defect", "accuracy", "0.700")
    ood = "| /data/cross-project | test | 400 | 0.610 [0.560, 0.660] | -0.090 | 0.550 | 0.580 |"
    assert first.endswith(ood)
    second = next(line for line in markdown.splitlines() if "/data/other <lang>" in line)
    assert second.endswith("| - | skipped |") and f"/data/other <lang>: {gone[0]}" in markdown
    assert next(line for line in markdown.splitlines() if "/data/no-baselines" in line).endswith("| - | - |")
    assert "<h2>Out-of-distribution evaluations</h2>" in html and "/data/other &lt;lang&gt;" in html
    assert "<td>0.610 [0.560, 0.660]</td>" in html and "<td>0.700</td>" in html


def test_report_without_evaluations_says_how_to_add_them(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    record_scores(store, {"py-defect": 0.7}, study="s")
    markdown = build_report(tmp_path, tmp_path / "out").markdown.read_text()
    assert "## Out-of-distribution evaluations" in markdown
    assert "`mtpeft evaluate RUN_DIR --data TASK=PATH`" in markdown
