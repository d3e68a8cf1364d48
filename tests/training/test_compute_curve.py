"""Every run records its validation curve against cumulative training compute (store and RUN_DIR/curve.json);
`curve_test` adds test scores at each point, and a resumed run's curve equals the uninterrupted one's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mtpeft.training.trainer as trainer_module
from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(root: Path, workspace: Path, **fields) -> dict:
    data = write_fixture_dataset("devign-jsonl", root / "data", n_per_split=16)
    task = {"task": "vulnerability", "data": str(data), "batch_size": 4, "max_length": 48}
    config = {"name": "curve", "model": "tiny-bert", "lr": 5e-3, "tasks": [task], "max_steps": 6}
    return (
        config | {"eval_every": 2, "save_every": 2, "workspace": str(workspace), "baselines": False} | fields
    )


def _curve(run) -> list[dict]:
    workspace = Path(run.run_dir).parents[1]
    stored = RunStore(workspace / "mtpeft.sqlite").get(run.run_id).details["curve"]
    assert stored == json.loads((Path(run.run_dir) / "curve.json").read_text())
    return stored


def test_the_curve_has_a_point_per_validation_with_growing_compute(tmp_path):
    (run,) = run_training(validate_config(_config(tmp_path, tmp_path / "ws")), progress=False)
    curve = _curve(run)
    assert [p["step"] for p in curve] == [2, 4, 6]
    for key in ("tokens", "padded_tokens", "train_flops_estimate", "wall_time_s"):
        values = [p["compute"][key] for p in curve]
        assert values == sorted(values) and values[0] > 0, key
    # The last point's work is the whole run's: the same count the run's cost reports.
    assert curve[-1]["compute"]["tokens"] == run.cost["tokens"]
    assert curve[-1]["compute"]["train_flops_estimate"] == run.cost["train_flops_estimate"]
    assert all("test" not in p for p in curve)  # test scores only with curve_test


def test_curve_test_scores_the_test_split_at_each_point_without_selecting_on_it(tmp_path):
    (plain,) = run_training(validate_config(_config(tmp_path, tmp_path / "a")), progress=False)
    (tested,) = run_training(
        validate_config(_config(tmp_path, tmp_path / "b", curve_test=True)), progress=False
    )
    curve = _curve(tested)
    assert all(set(p["test"]["vulnerability"]) >= {"accuracy", "f1"} for p in curve)
    # The final test score is the best checkpoint's, as without curve_test: selection reads valid only.
    assert tested.metrics["test"] == plain.metrics["test"]
    first_best = next(p for p in curve if p["score"] == max(q["score"] for q in curve))
    assert first_best["test"]["vulnerability"] == tested.metrics["test"]["vulnerability"]


def test_a_resumed_run_records_the_same_curve_points(tmp_path):
    (whole,) = run_training(validate_config(_config(tmp_path, tmp_path / "whole")), progress=False)
    stopped = validate_config(_config(tmp_path, tmp_path / "stopped"))
    with pytest.MonkeyPatch.context() as patch:  # Ctrl-C after step 5: the checkpoint of step 4 is kept
        patch.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
        patch.setenv("MTPEFT_INTERRUPT_AT_STEP", "5")
        with pytest.raises(KeyboardInterrupt):
            run_training(stopped, progress=False)
    (resumed,) = run_training(stopped, progress=False, resume=True)
    for a, b in zip(_curve(whole), _curve(resumed), strict=True):
        assert (a["step"], a["metrics"], a["compute"]["tokens"]) == (
            b["step"],
            b["metrics"],
            b["compute"]["tokens"],
        )
