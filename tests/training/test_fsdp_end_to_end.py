"""FSDP on two processes (gloo, CPU) trains the one-process model, as a user launches it.

LoRA is sharded through the config key (`distributed: {sharding: fsdp}`, torchrun), full fine-tuning
through accelerate's own switch (`accelerate launch --use_fsdp`, which on CPUs starts its processes
like torchrun; mtpeft takes the switch over and shards with torch's `fully_shard`). Each is compared
with the one-process run of the same config (dropout 0, same global batch). One validation, at the
last step, so that `best/` is the last step's weights in every run: with a validation mid-run, float
differences in the last bits can pick another best step on a tiny random model (seen: code-search
ranks of near-equal scores).

Tolerance of the trained weights, and why: the same as data parallelism's
(test_multiprocess_end_to_end.py): the processes add the same float32 numbers in another order (each
shard's mean, then a reduce-scatter), about 1e-7 relative per gradient, and AdamW's division by the
gradient's RMS makes those bits visible where a gradient is near zero (the code-search loss of a random
tiny model is flat). Measured: LoRA and the classification heads within 2e-6, the backbone of full
fine-tuning within 3e-5, the code-search projection within 1e-3 (DDP gives the same figures on these
configs). 2e-3 is allowed: below one step's change (lr 5e-3 per weight), while a lost shard or a
doubled gradient changes the weights by whole steps.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from test_multiprocess_end_to_end import (
    BIN,
    STEPS,
    WEIGHT_TOLERANCE,
    _config,
    _env,
    _metrics,
    _rows,
    _run,
    _run_dir,
    _train,
    _weights,
)

from mtpeft.data.fixtures import write_fixture_dataset

SHARDED = "FSDP ("  # the main process's line when it shards


def _accelerate_fsdp(root: Path, config: Path, workspace: str) -> subprocess.CompletedProcess:
    """`accelerate launch --use_fsdp` as a user would type it (no accelerate config file)."""
    command = [
        str(BIN / "accelerate"),
        "launch",
        "--use_fsdp",
        "--fsdp_version",
        "2",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "mtpeft.cli.main",
        "train",
        str(config),
        "--workspace",
        str(root / workspace),
        "--no-progress",
    ]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"accelerate launch --use_fsdp exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fsdp")
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", root / "data", n_per_split=20),
        "clone": write_fixture_dataset("bigclonebench", root / "data", n_per_split=20),
        "code-search": write_fixture_dataset("codesearchnet", root / "data", n_per_split=20),
    }
    lora_root, full_root = root / "lora", root / "full"
    lora_root.mkdir()
    full_root.mkdir()
    lora = _config(lora_root, data, eval_every=STEPS, distributed={"sharding": "fsdp"})
    full = _config(full_root, data, eval_every=STEPS, method="full", method_options={})
    return {
        "root": root,
        "lora_config": lora,
        "lora_one": _train(root, lora, 1, "lora-one"),
        "lora_fsdp": _train(root, lora, 2, "lora-fsdp"),
        "full_one": _train(root, full, 1, "full-one"),
        "full_fsdp_launch": _accelerate_fsdp(root, full, "full-fsdp"),
        "full_fsdp": root / "full-fsdp",
    }


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp_on_two_processes_trains_the_one_process_weights(runs, method):
    one, two = _weights(_run_dir(runs[f"{method}_one"])), _weights(_run_dir(runs[f"{method}_fsdp"]))
    assert one.keys() == two.keys()
    assert any(k.startswith("adapter_model") for k in one) if method == "lora" else len(one) > 30
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=0, atol=WEIGHT_TOLERANCE, msg=name)


def test_accelerate_launch_use_fsdp_is_sharded_by_mtpeft_not_by_accelerate(runs):
    """accelerate's switch reached mtpeft, which said it sharded (accelerate would have refused or
    wrapped the model again: the trainer refuses an FSDP distributed type of accelerate's own)."""
    stderr = runs["full_fsdp_launch"].stderr
    assert f"{SHARDED}accelerate's FSDP config (ACCELERATE_USE_FSDP)): each of 2 processes" in stderr
    # tiny-bert: its embeddings and its two layers (BertModel._no_split_modules: BertEmbeddings, BertLayer)
    assert "(3 blocks sharded as units)" in stderr


def test_best_from_shards_loads_in_one_process_and_predicts_the_recorded_validation(runs):
    """best/ is gathered from the shards into the usual format: `mtpeft evaluate` (one process, no FSDP)
    loads it and scores the valid split exactly as the sharded validation did during training, which
    ran each process's share of the batches in lockstep (20 examples: one batch per task, so the
    second process only ran a filler batch whose outputs were dropped)."""
    from mtpeft.evaluation.run_eval import evaluate_run

    for run in ("lora_fsdp", "full_fsdp"):
        run_dir = _run_dir(runs[run])
        during = json.loads((run_dir / "curve.json").read_text())[-1]["metrics"]
        alone, _ = evaluate_run(run_dir, "valid", baselines=False, progress=False)  # here: one process
        assert alone == during, run


def test_best_from_shards_predicts_in_one_process_what_the_one_process_run_predicts(runs):
    """`mtpeft.load` (one process, no FSDP) of the sharded run's best/ against the one-process run's."""
    import mtpeft

    snippets = ["int f(char *s) { char b[8]; strcpy(b, s); return 0; }", "def add(a, b):\n    return a + b"]
    for method in ("lora", "full"):
        one = mtpeft.load(_run_dir(runs[f"{method}_one"])).analyze(snippets)
        two = mtpeft.load(_run_dir(runs[f"{method}_fsdp"])).analyze(snippets)
        for alone, sharded in zip(one, two, strict=True):
            assert alone.keys() == sharded.keys() == {"vulnerability"}
            for task, prediction in alone.items():
                assert sharded[task]["label"] == prediction["label"], (method, task)
                assert sharded[task]["probability"] == pytest.approx(prediction["probability"], abs=1e-4)


def test_one_store_row(runs):
    for run in ("lora_fsdp", "full_fsdp"):
        assert [status for _, status in _rows(runs[run])] == ["finished"]


def test_a_killed_fsdp_run_resumes_on_two_processes_to_the_uninterrupted_weights_and_metrics(runs):
    """Checkpoint at step 2 (the whole model and AdamW state, gathered), process 1 SIGKILLed after
    step 3, `--resume` on 2 processes: every process's shards, data position and random state back."""
    workspace = runs["root"] / "killed"
    args = ["train", str(runs["lora_config"]), "--workspace", str(workspace), "--no-progress"]
    killed = _run(2, args, _env(MTPEFT_KILL_AT_STEP="3", MTPEFT_FAULT_RANK="1"), ok=False)
    assert killed.returncode != 0
    assert [status for _, status in _rows(workspace)] == ["interrupted"]
    _run(2, [*args, "--resume"], _env())
    assert [status for _, status in _rows(workspace)] == ["finished"]
    assert _metrics(_run_dir(workspace)) == _metrics(_run_dir(runs["lora_fsdp"]))
    resumed, straight = _weights(_run_dir(workspace)), _weights(_run_dir(runs["lora_fsdp"]))
    for name, tensor in straight.items():
        assert torch.equal(resumed[name], tensor), name  # the same arithmetic, in the same order
    log = (_run_dir(workspace) / "train.log").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log if '"loss"' in line]
    assert steps[-2:] == [3, 4] and steps.count(3) == 2  # step 3 trained again from the step-2 checkpoint


def test_a_learned_weighting_and_gradient_conflicts_under_fsdp_match_one_process(runs, tmp_path):
    """`uncertainty` keeps its learned log-variances whole beside the shards (optimised in a group of
    their own); `grad_conflict_every: 1` reads each task's gradient from the shards every step.
    Measured: weights equal, cosines within 3e-6, norms within 2e-4 relative (gradnorm and famo, run by
    hand the same way: weights within 4e-7 relative, cosines within 1e-5, norms within 1e-4)."""
    root = runs["root"]
    data = {t["task"]: Path(t["data"]) for t in yaml.safe_load(runs["lora_config"].read_text())["tasks"]}
    del data["clone"]
    config = _config(
        tmp_path,
        data,
        loss_weighting="uncertainty",
        grad_conflict_every=1,
        max_steps=3,
        eval_every=3,
        distributed={"sharding": "fsdp"},
    )
    one, two = _train(root, config, 1, "uncertainty-one"), _train(root, config, 2, "uncertainty-fsdp")

    def weights(workspace: Path) -> list[dict]:
        lines = [json.loads(x) for x in (_run_dir(workspace) / "train.log").read_text().splitlines()]
        return [line["loss_weights"] for line in lines if "loss" in line]

    assert weights(one) != [weights(one)[0]] * 3  # the weights were learned, not left alone
    for a, b in zip(weights(one), weights(two), strict=True):
        assert b == pytest.approx(a, rel=1e-4)
    conflict = [json.loads((_run_dir(w) / "grad_conflict.json").read_text()) for w in (one, two)]
    assert len(conflict[0]["history"]) == len(conflict[1]["history"]) == 3
    for a, b in zip(conflict[0]["history"], conflict[1]["history"], strict=True):
        assert b["cosine"] == pytest.approx(a["cosine"], rel=1e-3, abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)


def test_what_fsdp_does_not_take_is_refused_by_field_before_training(tmp_path):
    from mtpeft.config import TrainConfig
    from mtpeft.errors import ConfigError
    from mtpeft.modeling.fsdp import FsdpSettings
    from mtpeft.training.trainer import _refuse_unsupported_with_fsdp

    settings = FsdpSettings("distributed.sharding")
    config = TrainConfig(tasks=[{"task": "vulnerability"}], mixed_precision="fp16")
    with pytest.raises(ConfigError, match="mixed_precision: fp16 with FSDP") as raised:
        _refuse_unsupported_with_fsdp(config, settings, {})
    assert raised.value.field == "mixed_precision"
