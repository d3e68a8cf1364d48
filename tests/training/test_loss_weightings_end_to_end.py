"""`normalized`, `gradnorm` and `famo` on the real training path (tiny-bert, fixture data): each trains with
finite losses and moving weights, and a run stopped and resumed from its checkpoint ends with exactly the
weights, gradient-conflict record and validation scores of the run that was never stopped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import mtpeft.training.trainer as trainer_module
from mtpeft.config import TrainConfig, validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_STEPS, SAVE_EVERY, STOP_AFTER = 8, 4, 6
OPTIONS = {"normalized": {"every": 2}, "gradnorm": {}, "famo": {}}  # normalized: reweigh within the run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "vulnerability": write_fixture_dataset("devign-jsonl", root, n_per_split=32),
        "code-search": write_fixture_dataset("codesearchnet", root, n_per_split=32),
    }


def _config(weighting: str, data: dict[str, Path], workspace: Path) -> TrainConfig:
    return validate_config(
        {
            "name": weighting,
            "model": "tiny-bert",
            "method": "lora",
            "lr": 5e-3,
            "tasks": [
                {"task": t, "data": str(p), "batch_size": 8, "max_length": 64} for t, p in data.items()
            ],
            "loss_weighting": weighting,
            "loss_weighting_options": OPTIONS[weighting],
            "grad_conflict_every": 2,
            "max_steps": MAX_STEPS,
            "eval_every": SAVE_EVERY,
            "save_every": SAVE_EVERY,
            "workspace": str(workspace),
            "evaluate_splits": [],
            "baselines": False,
        }
    )


def _steps(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "train.log").read_text().splitlines()]
    return [entry for entry in lines if "loss" in entry]


@pytest.mark.parametrize("weighting", list(OPTIONS))
def test_trains_and_a_resumed_run_continues_with_the_same_weighting_state(weighting, data, tmp_path):
    reference = run_training(_config(weighting, data, tmp_path / "reference"), progress=False)[0]
    steps = _steps(reference.run_dir)
    assert len(steps) == MAX_STEPS
    assert all(math.isfinite(v) for entry in steps for v in entry["loss"].values())
    assert steps[-1]["loss_weights"] != steps[0]["loss_weights"]  # the weighting did move the weights

    stopped = tmp_path / "stopped"
    with pytest.MonkeyPatch.context() as patch:  # Ctrl-C after step 6: the checkpoint of step 4 is kept
        patch.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
        patch.setenv("MTPEFT_INTERRUPT_AT_STEP", str(STOP_AFTER))
        with pytest.raises(KeyboardInterrupt):
            run_training(_config(weighting, data, stopped), progress=False)
    resumed = run_training(_config(weighting, data, stopped), resume=True, progress=False)[0]

    assert [e["step"] for e in _steps(resumed.run_dir)].count(5) == 2  # steps 5-6 ran again
    assert _steps(resumed.run_dir)[-1]["loss_weights"] == steps[-1]["loss_weights"]
    assert resumed.metrics["valid"] == reference.metrics["valid"]
    # FAMO scores each batch of a step again once the step is applied: those forwards count in the cost.
    cost = reference.cost
    assert cost["forward_only_positions"] == (cost["padded_tokens"] if weighting == "famo" else 0)
    assert resumed.cost["forward_only_positions"] == cost["forward_only_positions"]  # kept by the checkpoint
    conflict = [
        RunStore(ws / "mtpeft.sqlite").get(r.run_id).details["grad_conflict"]
        for ws, r in ((tmp_path / "reference", reference), (stopped, resumed))
    ]
    assert conflict[0] == conflict[1] and conflict[0]["measurements"] == MAX_STEPS // 2
