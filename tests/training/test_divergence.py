"""Numbers you can trust: a diverging run stops with one message and is never recorded as finished."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import mtpeft.training.run as run_module
import mtpeft.training.trainer as trainer_module
from mtpeft.config import TrainConfig, validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import NonFiniteMetric, TrainingDiverged
from mtpeft.layout import run_dir_for
from mtpeft.manifest import write_manifest
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# lr=1e30 makes this run's loss NaN at step 3 (steps 1-2 blow the weights up to ~1e30 first);
# lr=1e38 overflows AdamW's float32 step size (lr / bias correction) instead.
NAN_LR = 1e30


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "vulnerability": write_fixture_dataset("devign-jsonl", root, n_per_split=32),
        "code-search": write_fixture_dataset("codesearchnet", root, n_per_split=32),
    }


def _raw(data: dict[str, Path], workspace: Path, **overrides) -> dict:
    config = {
        "name": "div",
        "model": "tiny-bert",
        "method": "lora",
        "lr": 5e-3,
        "tasks": [{"task": t, "data": str(p), "batch_size": 8, "max_length": 64} for t, p in data.items()],
        "max_steps": 12,
        "eval_every": 4,
        "save_every": 4,
        "workspace": str(workspace),
        "seed": 0,
        "baselines": False,
    }
    return config | overrides


def _config(data: dict[str, Path], workspace: Path, **overrides) -> TrainConfig:
    return validate_config(_raw(data, workspace, **overrides))


def _only_run(workspace: Path):
    runs = RunStore(workspace / "mtpeft.sqlite").list_runs()
    assert len(runs) == 1
    return runs[0]


def test_a_nan_loss_stops_mtpeft_train_with_one_message_and_a_failed_run(data, tmp_path, capsys, monkeypatch):
    from mtpeft.cli.main import main

    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(_raw(data, tmp_path / "ws")))
    argv = ["mtpeft", "train", str(config_path), "--set", f"lr={NAN_LR}", "--no-progress"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()  # the console script's own entry point: anything but an MtpeftError would escape here
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    message = errors[0]
    assert "training of run div diverged at step 3: the loss of task 'vulnerability' is nan" in message
    assert "lr 1e+30" in message and "Lower lr" in message
    run = _only_run(tmp_path / "ws")
    assert run.status == "failed" and run.error.startswith("TrainingDiverged: training of run div diverged")
    assert "test" not in run.metrics
    log = [json.loads(line) for line in (Path(run.run_dir) / "train.log").read_text().splitlines()]
    assert log[-1]["event"] == "diverged" and log[-1]["step"] == 3
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2]  # nothing of step 3 was kept


def test_an_optimiser_step_that_overflows_is_a_divergence_too(data, tmp_path):
    # PyTorch's per-tensor AdamW raises on the overflow; its fused kernel (ours) writes inf into the
    # weights, which the check after every step finds: either way the run stops at that step.
    overflow = (
        r"diverged at step 2: (the optimiser step overflowed|parameter .* holds inf/NaN after the optimiser)"
    )
    with pytest.raises(TrainingDiverged, match=overflow):
        run_training(_config(data, tmp_path, lr=1e38), progress=False)
    assert _only_run(tmp_path).status == "failed"


def test_a_non_finite_gradient_norm_stops_before_the_optimiser_step(data, tmp_path, monkeypatch):
    from accelerate import Accelerator

    clip = Accelerator.clip_grad_norm_
    calls = {"clip": 0, "optimizer_steps": 0}

    def clip_with_a_nan_gradient_at_step_2(self, parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        calls["clip"] += 1
        if calls["clip"] == 2:
            next(p for p in parameters if p.grad is not None).grad.fill_(math.nan)
        return clip(self, parameters, max_norm, *args, **kwargs)

    def count(optimizer, args, kwargs) -> None:
        calls["optimizer_steps"] += 1

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", clip_with_a_nan_gradient_at_step_2)
    hook = register_optimizer_step_pre_hook(count)
    try:
        with pytest.raises(TrainingDiverged, match="diverged at step 2: the gradient norm is nan"):
            run_training(_config(data, tmp_path), progress=False)
    finally:
        hook.remove()
    assert calls["optimizer_steps"] == 1  # step 1 only: the NaN gradient never reached AdamW


def test_weights_that_became_nan_on_the_last_step_are_never_kept_as_best(data, tmp_path):
    # NaN logits still argmax to a label, so accuracy alone would look ordinary: the weights are checked.
    steps = {"n": 0}

    def poison_the_vulnerability_head_after_step_4(optimizer, args, kwargs) -> None:
        steps["n"] += 1
        if steps["n"] == 4:
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    if parameter.ndim == 2 and parameter.shape[0] == 2:  # the 2-class output layer
                        parameter.data.fill_(math.nan)

    hook = register_optimizer_step_post_hook(poison_the_vulnerability_head_after_step_4)
    try:
        with pytest.raises(
            TrainingDiverged, match=r"diverged at step 4: parameter heads\.vulnerability\..* inf/NaN"
        ):
            run_training(_config(data, tmp_path, max_steps=4), progress=False)
    finally:
        hook.remove()
    run = _only_run(tmp_path)
    assert run.status == "failed" and not (Path(run.run_dir) / "best").exists()


def test_a_poisoned_optimizer_state_stops_the_resumed_run(data, tmp_path, monkeypatch):
    # A checkpoint whose bytes are as written (manifest intact) but whose AdamW moments hold NaN, as a
    # run that diverged before these checks existed would have saved.
    config = _config(data, tmp_path)
    monkeypatch.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
    monkeypatch.setenv("MTPEFT_INTERRUPT_AT_STEP", "6")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    monkeypatch.delenv("MTPEFT_INTERRUPT_AT_STEP")
    checkpoint = run_dir_for(config) / "checkpoints" / "step-0000004"
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    for moments in optimizer["state"].values():
        moments["exp_avg"].fill_(math.nan)
    torch.save(optimizer, checkpoint / "optimizer.bin")
    write_manifest(checkpoint)

    # The first step after resuming (5) writes the NaN moments into the weights; it is caught there.
    poisoned = r"diverged at step 5: parameter .*lora_A.* holds inf/NaN after"
    with pytest.raises(TrainingDiverged, match=poisoned):
        run_training(config, resume=True, progress=False)
    run = _only_run(tmp_path)
    assert run.status == "failed" and "checkpoint may be damaged" in run.error


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_validation_with_non_finite_metrics_is_never_selected(data, tmp_path, monkeypatch, capsys, bad):
    evaluate_task = trainer_module.evaluate_task
    calls = {"n": 0}

    def second_validation_non_finite(*args, **kwargs):
        result = evaluate_task(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (3, 4):  # both tasks of the validation at step 8
            result.metrics = {name: bad for name in result.metrics}
        return result

    monkeypatch.setattr(trainer_module, "evaluate_task", second_validation_non_finite)
    result = run_training(_config(data, tmp_path), progress=False)[0]
    best = json.loads((result.run_dir / "best" / "heads.json").read_text())
    assert best["step"] in (4, 12) and math.isfinite(best["score"])
    assert "validation at step 8 gave non-finite metrics" in capsys.readouterr().err
    log = [json.loads(line) for line in (result.run_dir / "train.log").read_text().splitlines()]
    assert [e["step"] for e in log if e.get("event") == "non-finite-validation"] == [8]
    assert _only_run(tmp_path).status == "finished"
    assert all(math.isfinite(v) for m in result.metrics["valid"].values() for v in m.values())


def test_a_run_whose_validations_are_all_non_finite_keeps_nothing_and_fails(data, tmp_path, monkeypatch):
    evaluate_task = trainer_module.evaluate_task

    def always_nan(*args, **kwargs):
        result = evaluate_task(*args, **kwargs)
        result.metrics = {name: math.nan for name in result.metrics}
        return result

    monkeypatch.setattr(trainer_module, "evaluate_task", always_nan)
    with pytest.raises(TrainingDiverged, match="no validation gave finite metrics"):
        run_training(_config(data, tmp_path, max_steps=8), progress=False)
    assert _only_run(tmp_path).status == "failed"


def test_a_non_finite_test_metric_fails_the_run_naming_the_metric(data, tmp_path, monkeypatch):
    evaluate_run = run_module.evaluate_run

    def inf_mrr(*args, **kwargs):
        metrics, baselines = evaluate_run(*args, **kwargs)
        metrics["code-search"]["mrr"] = math.inf
        return metrics, baselines

    monkeypatch.setattr(run_module, "evaluate_run", inf_mrr)
    with pytest.raises(NonFiniteMetric, match="test/code-search/mrr = inf"):
        run_training(_config(data, tmp_path, max_steps=4), progress=False)
    run = _only_run(tmp_path)
    assert run.status == "failed" and "test/code-search/mrr = inf" in run.error and run.metrics == {}
