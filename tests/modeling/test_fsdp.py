"""FSDP's sharded gradients give the one-process norms, cosines and clipping (modeling/fsdp.py), and
accelerate's FSDP switch is taken over with the settings mtpeft honours.

Two CPU processes joined with gloo shard a small model with torch's `fully_shard` (odd sizes, so the
shards are uneven; one parameter kept whole, like the loss weighting's), each backpropagates its half
of a batch for two "tasks", and every number computed from the shards must equal the one a single
process computes from the whole gradients: within 1e-5 relative, float32 sums in another order
(observed about 1e-7).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtpeft.errors import MtpeftError
from mtpeft.modeling import fsdp
from mtpeft.training.grad_conflict import TaskGradients

ROWS = 4  # even: each process's mean over its half averages to the whole batch's mean
MAX_NORM = 0.05  # below the gradient's norm: clipping scales every gradient


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh(), torch.nn.Linear(3, 7))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(ROWS, 5, generator=generator), torch.randn(ROWS, 5, generator=generator)


def _measure(model: torch.nn.Module, rows: slice, *, sharded: bool) -> dict:
    """Two tasks' backward passes, their gradients on the model, then a clip of everything."""
    a, b = _data()
    kept = torch.nn.Parameter(torch.tensor([0.3, -0.2]))  # replicated: the same gradient everywhere
    gradients = TaskGradients(list(model.parameters()), sharded=sharded)
    model(a[rows]).sum(dim=1).mean().backward()
    gradients.record("a")
    model(b[rows]).pow(2).mean(dim=1).mean().backward()
    gradients.record("b")
    kept.grad = torch.tensor([0.01, 0.02])
    parameters = [*model.parameters(), kept]
    if sharded:
        norm = fsdp.clip_grad_norm_(parameters, MAX_NORM)
    else:
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, MAX_NORM))
    grads = {n: fsdp.local(p.grad) for n, p in model.named_parameters()}
    if sharded:
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    return {
        "norm": norm,
        "grads": {n: g.clone() for n, g in grads.items()} | {"kept": kept.grad.clone()},
        "task_norms": gradients.norms(),
        "cosines": gradients.cosines(),
    }


def _worker(rank: int, port: int, results: dict) -> None:
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _model()
        fully_shard(model[0])
        fully_shard(model)
        results[rank] = _measure(model, slice(rank * ROWS // 2, (rank + 1) * ROWS // 2), sharded=True)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes() -> dict:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
        return dict(results)


@pytest.fixture(scope="module")
def alone() -> dict:
    return _measure(_model(), slice(None), sharded=False)


def test_clipping_sharded_and_whole_gradients_gives_the_one_process_norm_and_gradients(two_processes, alone):
    assert alone["norm"] > MAX_NORM * 2  # the clip did scale
    for rank in (0, 1):
        assert two_processes[rank]["norm"] == pytest.approx(alone["norm"], rel=1e-5)
        for name, grad in alone["grads"].items():
            torch.testing.assert_close(two_processes[rank]["grads"][name], grad, rtol=1e-5, atol=1e-8)


def test_per_task_gradient_norms_and_cosines_from_shards_are_the_whole_ones(two_processes, alone):
    """What gradnorm, famo and grad_conflict_every read, from each process's shards only."""
    for rank in (0, 1):
        assert two_processes[rank]["task_norms"] == pytest.approx(alone["task_norms"], rel=1e-5)
        assert two_processes[rank]["cosines"] == pytest.approx(alone["cosines"], rel=1e-5)
    assert abs(alone["cosines"][("a", "b")]) < 0.999  # two different directions, not one


# ---- accelerate's switch ------------------------------------------------------------------------
def _config(**distributed):
    from mtpeft.config import TrainConfig

    return TrainConfig(tasks=[{"task": "vulnerability"}], distributed=distributed)


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("FSDP_", "ACCELERATE_USE_", "MTPEFT_FSDP")):
            monkeypatch.delenv(name)
    # claim_accelerate_switch writes these itself: recorded here so they are removed after the test
    # (left behind, they turned FSDP on in every later test's training subprocess).
    for name in ("ACCELERATE_USE_FSDP", "MTPEFT_FSDP_FROM_ACCELERATE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_accelerates_fsdp_switch_is_taken_over_with_its_settings(clean_env):
    clean_env.setenv("ACCELERATE_USE_FSDP", "true")
    clean_env.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    clean_env.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "BertLayer, BertEmbeddings")
    fsdp.claim_accelerate_switch()
    assert os.environ["ACCELERATE_USE_FSDP"] == "false"  # accelerate itself will not wrap again
    settings = fsdp.requested(_config())
    assert settings is not None and settings.source.startswith("accelerate")
    assert settings.reshard_after_forward is False
    assert settings.wrap_classes == ("BertLayer", "BertEmbeddings")


def test_the_config_key_turns_fsdp_on_and_off(clean_env):
    assert fsdp.requested(_config()) is None
    settings = fsdp.requested(_config(sharding="fsdp", wrap_classes=["BertLayer"]))
    assert settings == fsdp.FsdpSettings("distributed.sharding", True, ("BertLayer",))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FSDP_OFFLOAD_PARAMS", "true", "FSDP_OFFLOAD_PARAMS=true .* not supported"),
        ("FSDP_ACTIVATION_CHECKPOINTING", "true", "FSDP_ACTIVATION_CHECKPOINTING=true .* not supported"),
        ("FSDP_AUTO_WRAP_POLICY", "SIZE_BASED_WRAP", "SIZE_BASED_WRAP is not supported"),
    ],
)
def test_fsdp_settings_mtpeft_cannot_honour_are_refused_by_name(clean_env, variable, value, message):
    clean_env.setenv("ACCELERATE_USE_FSDP", "true")
    clean_env.setenv(variable, value)
    with pytest.raises(MtpeftError, match=message):
        fsdp.requested(_config())


def test_deepspeed_is_refused_rather_than_quietly_run_as_plain_data_parallelism(clean_env):
    fsdp.refuse_deepspeed()
    clean_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(MtpeftError, match="DeepSpeed .* not supported: shard the weights with FSDP"):
        fsdp.refuse_deepspeed()


def test_the_sharding_does_not_change_the_run_key():
    """How the work is divided is not part of the result (like the number of processes)."""
    assert _config(sharding="fsdp").run_key() == _config().run_key()
