"""Several processes divide each batch and still compute the one-process gradient (modeling/distributed.py).

The collectives are exercised for real: two CPU processes joined with gloo on loopback (the backend a
CPU `torchrun` uses), each taking its share of one batch; their DDP-averaged gradients must equal the
gradient one process computes on the whole batch. Float32 sums in another order differ in the last
bits, so "equal" is within 1e-5 relative (observed: about 1e-7).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtpeft.heads.classification import ClassificationHead
from mtpeft.heads.retrieval import RetrievalHead
from mtpeft.modeling.distributed import LOSS_SHARE, SHARD_RANK, SHARD_SIZES, Shard, global_loss
from mtpeft.training.grad_conflict import TaskGradients

BATCH = 5  # odd on purpose: shares of 3 and 2
HIDDEN = 8


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [(5, 2, [3, 2]), (4, 2, [2, 2]), (7, 3, [3, 2, 2]), (2, 2, [1, 1]), (6, 1, [6])],
)
def test_shares_are_dealt_out_as_even_as_possible_and_cover_the_batch(total, size, expected):
    batch = list(range(100, 100 + total))
    shares = [Shard(rank, size).take(batch) for rank in range(size)]
    assert [len(s) for s in shares] == expected == Shard(0, size).sizes(total)
    assert sorted(i for share in shares for i in share) == batch  # disjoint, nothing left out
    if size > 1:  # a longest-first batch: each process gets long and short examples alike
        assert shares[0][0] == batch[0] and shares[1][0] == batch[1]


def test_one_process_changes_nothing():
    loss = torch.tensor(2.0, requires_grad=True)
    assert global_loss(loss, 0.4, 1) is loss


class _Model(torch.nn.Module):
    """A shared 'module' (the PEFT module's stand-in) under a classification and a retrieval head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = torch.nn.Linear(HIDDEN, HIDDEN)
        self.classify = ClassificationHead(HIDDEN, 3, dropout=0.0)
        self.search = RetrievalHead(HIDDEN, dim=4)

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        if task == "classify":
            return self.classify.loss({"code": self.shared(batch["x"])}, batch)
        return self.search.loss({"query": self.shared(batch["q"]), "code": self.shared(batch["c"])}, batch)


def _data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "x": torch.randn(BATCH, HIDDEN, generator=generator),
        "labels": torch.randint(0, 3, (BATCH,), generator=generator),
        "q": torch.randn(BATCH, HIDDEN, generator=generator),
        "c": torch.randn(BATCH, HIDDEN, generator=generator),
    }


def _step(model: torch.nn.Module, shard: Shard, wrapped: torch.nn.Module) -> dict:
    """One step of both tasks as the trainer runs it: no_sync until the last backward, global losses,
    per-task gradients on the shared module; a FAMO-like log term checks a non-linear weighting."""
    data = _data()
    rows = shard.take(list(range(BATCH)))
    shared = list(model.shared.parameters())
    gradients = TaskGradients(shared)
    losses = {}
    for position, task in enumerate(("classify", "search")):
        batch = {k: v[rows] for k, v in data.items()}
        if shard.several:
            batch |= {SHARD_SIZES: shard.sizes(BATCH), SHARD_RANK: shard.rank, LOSS_SHARE: len(rows) / BATCH}
        loss = global_loss(wrapped(task, batch), batch.get(LOSS_SHARE, 1.0), shard.size)
        term = torch.log(loss) if task == "search" else loss
        if position == 0 and shard.several:
            with wrapped.no_sync():
                term.backward()
        else:
            term.backward()
        gradients.record(task)
        losses[task] = float(loss.detach())
    gradients.synchronize()
    return {
        "losses": losses,
        "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
        "task_norms": gradients.norms(),
    }


def _worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _Model()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        results[rank] = _step(model, Shard(rank, 2), ddp)
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


def test_two_processes_compute_the_one_process_gradient_of_every_parameter(two_processes):
    model = _Model()
    alone = _step(model, Shard(), model)
    for rank in (0, 1):
        for name, grad in alone["grads"].items():
            torch.testing.assert_close(two_processes[rank]["grads"][name], grad, rtol=1e-5, atol=1e-7)
            assert grad.abs().max() > 0, name  # the comparison is not between zeros


def test_two_processes_see_the_one_process_losses(two_processes):
    model = _Model()
    alone = _step(model, Shard(), model)
    for rank in (0, 1):
        assert two_processes[rank]["losses"] == pytest.approx(alone["losses"], rel=1e-6)


def test_each_tasks_gradient_on_the_shared_module_is_the_global_one(two_processes):
    """What gradnorm and grad_conflict_every read: per-task norms of the whole batch's gradient."""
    model = _Model()
    alone = _step(model, Shard(), model)
    for rank in (0, 1):
        assert two_processes[rank]["task_norms"] == pytest.approx(alone["task_norms"], rel=1e-5)


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharding_by_accelerate_itself_is_refused_with_what_to_use_instead(kind):
    """mtpeft shards with FSDP itself (modeling/fsdp.py); accelerate wrapping the model too is refused."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from mtpeft.errors import MtpeftError
    from mtpeft.training.trainer import _refuse_unsupported_sharding

    with pytest.raises(MtpeftError, match=f"{kind} set up by accelerate itself is not supported"):
        _refuse_unsupported_sharding(SimpleNamespace(distributed_type=DistributedType[kind]))
    _refuse_unsupported_sharding(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
