"""The real training path on tiny models and fixture data: multi, single, resume, reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

FORMATS = {
    "vulnerability": "devign-jsonl",
    "clone": "bigclonebench",
    "code-search": "codesearchnet",
    "flaky": "flakeflagger-json",
}


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {task: write_fixture_dataset(fmt, root, n_per_split=32) for task, fmt in FORMATS.items()}


def _config(data: dict[str, Path], workspace: Path, **overrides) -> dict:
    config = {
        "name": "e2e",
        "model": "tiny-bert",
        "method": "lora",
        "lr": 5e-3,
        "tasks": [{"task": t, "data": str(p), "batch_size": 8, "max_length": 64} for t, p in data.items()],
        "max_steps": 16,
        "eval_every": 8,
        "save_every": 8,
        "workspace": str(workspace),
        "seed": 0,
    }
    return config | overrides


def test_multi_task_run_trains_evaluates_and_lands_in_the_store(fixture_data, tmp_path):
    result = run_training(validate_config(_config(fixture_data, tmp_path)), progress=False)[0]
    assert set(result.metrics["test"]) == set(FORMATS)
    assert 0.0 <= result.metrics["test"]["code-search"]["mrr"] <= 1.0
    assert set(result.baselines["vulnerability"]) == {"majority", "random", "tfidf"}
    record = RunStore(tmp_path / "mtpeft.sqlite").get(result.run_id)
    assert record.status == "finished" and record.mode == "multi"
    assert record.metrics["test"]["flaky"]["f1"] == result.metrics["test"]["flaky"]["f1"]
    assert record.cost["tokens"] > 0 and record.cost["trainable_params"] < record.cost["backbone_params"]
    # Official prediction files, one per benchmark format.
    predictions = result.run_dir / "predictions" / "test"
    assert (predictions / "vulnerability.txt").exists() or any(predictions.glob("vulnerability*"))
    assert any(predictions.glob("code-search*"))


def test_single_mode_runs_one_module_per_task_as_one_group(fixture_data, tmp_path):
    data = {t: fixture_data[t] for t in ("vulnerability", "flaky")}
    results = run_training(
        validate_config(_config(data, tmp_path, mode="single", max_steps=8)), progress=False
    )
    records = RunStore(tmp_path / "mtpeft.sqlite").list_runs()
    assert [r.tasks for r in records] == [["vulnerability"], ["flaky"]]
    assert records[0].group_id == records[1].group_id is not None
    multi = run_training(validate_config(_config(data, tmp_path, max_steps=8)), progress=False)[0]
    # Each single run trains its own LoRA; the multi run shares one (heads are per task in both).
    single_shared = sum(r.cost["trainable_params"] - _head_params(r) for r in results)
    multi_shared = multi.cost["trainable_params"] - _head_params(multi)
    assert single_shared == 2 * multi_shared > 0


def _head_params(result) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(str(result.run_dir / "best" / "heads.safetensors")).values())


def test_saved_run_reloads_with_identical_predictions(fixture_data, tmp_path):
    from mtpeft.evaluation.run_eval import evaluate_run

    data = {"vulnerability": fixture_data["vulnerability"]}
    result = run_training(validate_config(_config(data, tmp_path, method="adapter")), progress=False)[0]
    again, _ = evaluate_run(result.run_dir, "test", baselines=False, progress=False)
    assert again == result.metrics["test"]


def test_killed_run_resumes_to_one_finished_run(fixture_data, tmp_path):
    data = {t: fixture_data[t] for t in ("vulnerability", "code-search")}
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(_config(data, tmp_path / "ws", max_steps=24, save_every=8)))
    cli = [sys.executable, "-m", "mtpeft.cli.main", "train", str(config_path), "--no-progress"]
    killed = subprocess.run(cli, env=os.environ | {"MTPEFT_KILL_AT_STEP": "13"}, capture_output=True)
    assert killed.returncode == -9
    store = RunStore(tmp_path / "ws" / "mtpeft.sqlite")
    assert [r.status for r in store.list_runs()] == ["interrupted"]
    resumed = subprocess.run(cli + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    runs = store.list_runs()
    assert [r.status for r in runs] == ["finished"]
    log = [json.loads(line) for line in (Path(runs[0].run_dir) / "train.log").read_text().splitlines()]
    steps = [entry["step"] for entry in log]
    # Steps 9-13 ran twice (before the kill and after resuming from the step-8 checkpoint), none skipped.
    assert sorted(set(steps)) == list(range(1, 25)) and steps.count(10) == 2


def test_a_token_budget_trains_every_task_on_larger_batches_of_its_short_code(fixture_data, tmp_path):
    plain = _config(fixture_data, tmp_path / "a", max_steps=4)
    fixed = run_training(validate_config(plain), progress=False)[0]
    config = _config(fixture_data, tmp_path / "b", max_steps=4)
    for entry in config["tasks"]:
        entry["batch_tokens"] = 1024
    budget = run_training(validate_config(config), progress=False)[0]
    assert fixed.cost["samples"] == 4 * 4 * 8  # steps x tasks x batch_size
    # Fixture snippets are short: a 1024-position budget packs more of them into each task's batch,
    # while no batch computes more positions than its budget.
    assert budget.cost["samples"] > 2 * fixed.cost["samples"]
    assert budget.cost["padded_tokens"] <= 4 * 4 * 1024
    assert budget.run_id != fixed.run_id
