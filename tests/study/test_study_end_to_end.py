"""One real (tiny) study: tiny-bert on fixture data, trained, resumed as finished, reported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.store import RunStore
from mtpeft.study.spec import parse_study


def _write_study(root, name: str, base: dict):
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", root / "data", n_per_split=24),
        "code-search": write_fixture_dataset("codesearchnet", root / "data", n_per_split=24),
    }
    spec = parse_study(
        {
            "name": name,
            "workspace": str(root / "ws"),
            "base": {"lr": 0.005, "baselines": False, **base},
            "tasks": [
                {"task": t, "data": str(p), "batch_size": 8, "max_length": 48} for t, p in data.items()
            ],
            "grid": {
                "models": ["tiny-bert"],
                "methods": ["lora"],
                "task_sets": ["single", "all"],
                "seeds": [0],
            },
        }
    )
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    return spec, path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return _write_study(
        tmp_path_factory.mktemp("e2e-study"), "tiny", {"max_steps": 4, "eval_every": 4, "save_every": 4}
    )


def test_tiny_study_trains_skips_and_reports(study, tmp_path):
    from mtpeft.cli.main import app

    spec, path = study
    runner = CliRunner()
    first = runner.invoke(app, ["study", str(path), "--no-progress"])
    assert first.exit_code == 0, first.output
    records = RunStore(f"{spec.workspace}/mtpeft.sqlite").list_runs(study="tiny")
    assert sorted((r.mode, tuple(r.tasks), r.status) for r in records) == [
        ("multi", ("vulnerability", "code-search"), "finished"),
        ("single", ("code-search",), "finished"),
        ("single", ("vulnerability",), "finished"),
    ]
    again = runner.invoke(app, ["study", str(path), "--no-progress"])
    assert again.exit_code == 0 and again.output.count("skipped") == 3
    assert len(RunStore(f"{spec.workspace}/mtpeft.sqlite").list_runs()) == 3

    out = tmp_path / "report"
    report = runner.invoke(app, ["report", "--workspace", spec.workspace, "--out", str(out)])
    assert report.exit_code == 0, report.output
    markdown = (out / "report.md").read_text()
    assert "| tiny-bert / lora | vulnerability | accuracy |" in markdown
    assert "| tiny-bert / lora | code-search | mrr |" in markdown
    # One seed and real per-example prediction files: the interval comes from a paired bootstrap.
    assert "paired bootstrap over 24 test examples" in markdown


def test_study_stopped_half_way_resumes_without_redoing_finished_runs(tmp_path):
    spec, path = _write_study(tmp_path, "stopped", {"max_steps": 8, "eval_every": 4, "save_every": 4})
    cli = [sys.executable, "-m", "mtpeft.cli.main", "study", str(path), "--no-progress"]
    # Ctrl-C at the 14th optimiser step of the process: run 1 done (8 steps), run 2 at its step 6.
    stopped = subprocess.run(
        cli, env=os.environ | {"MTPEFT_INTERRUPT_AT_STEP": "14"}, capture_output=True, text=True
    )
    assert stopped.returncode == 130, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "stopped: 1 finished run(s)" in stopped.stdout
    store = RunStore(f"{spec.workspace}/mtpeft.sqlite")
    first, second = store.list_runs(study="stopped")
    assert (first.status, second.status) == ("finished", "interrupted")
    first_finished_at = first.finished_at
    wide = os.environ | {"COLUMNS": "160"}
    dry = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, env=wide)
    resume_row = next(line.split() for line in dry.stdout.splitlines() if " resume " in line)
    assert resume_row[4:6] == ["resume", "4"]  # 8 steps, checkpoint at 4: 4 micro-batches left to train

    resumed = subprocess.run(cli, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed" in resumed.stdout and resumed.stdout.count("skipped") == 1
    runs = store.list_runs(study="stopped")
    assert [r.status for r in runs] == ["finished"] * 3  # the interrupted row finished, none added
    assert runs[0].finished_at == first_finished_at  # the finished run was skipped, not retrained
    log = Path(runs[1].run_dir, "train.log").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    # Resumed from its step-4 checkpoint: steps 5-6 ran twice, 1-4 once.
    assert steps.count(4) == 1 and steps.count(5) == 2 and sorted(set(steps)) == list(range(1, 9))


NO_RAY = importlib.util.find_spec("ray") is None


@pytest.mark.skipif(NO_RAY, reason="Ray is optional: pip install 'mtpeft[ray]'")
def test_ray_executor_trains_every_run_in_ray_workers(tmp_path):
    spec, path = _write_study(tmp_path, "on-ray", {"max_steps": 4, "eval_every": 4, "save_every": 4})
    cli = [sys.executable, "-m", "mtpeft.cli.main", "study", str(path), "--no-progress", "--executor", "ray"]
    study_process = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = study_process.communicate(timeout=600)
    assert study_process.returncode == 0, out[-2000:] + err[-2000:]
    store_file = f"{spec.workspace}/mtpeft.sqlite"
    runs = RunStore(store_file).list_runs(study="on-ray")
    assert sorted(r.status for r in runs) == ["finished"] * 3
    # Trained in Ray workers, recorded by the driver alone: each run names its node; the run directories
    # went to the default storage, the workspace.
    assert all(r.details["node"]["node_id"] for r in runs)
    assert all(Path(r.run_dir).parent == Path(spec.workspace) / "runs" for r in runs)
    assert all((Path(r.run_dir) / "best").is_dir() for r in runs)
    again = subprocess.run(cli, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3
