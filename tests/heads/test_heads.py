"""Heads and pooling: shapes, masking, and losses a user relies on."""

from __future__ import annotations

import torch

from mtpeft.heads import build_head
from mtpeft.heads.pooling import POOLINGS
from mtpeft.tasks.spec import TaskKind, TaskSpec


def test_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert POOLINGS["mean"](hidden, mask).item() == 2.0
    assert POOLINGS["last-token"](hidden, mask).item() == 3.0
    assert POOLINGS["cls"](hidden, mask).item() == 1.0


def _vectors(ids: list[int]) -> torch.Tensor:
    """Stand-in pooled vectors: one-hot of an id, so equal ids give equal vectors."""
    return torch.nn.functional.one_hot(torch.tensor(ids) % 8, 8).float()


def test_pair_head_sees_both_snippets():
    spec = TaskSpec(name="c", kind=TaskKind.PAIR, format="bigclonebench", labels=["0", "1"], metrics=["f1"])
    head = build_head(spec, 8).eval()
    assert head.inputs == ("code", "code_b")
    probs = head.predict({"code": _vectors([1, 1]), "code_b": _vectors([1, 2])})["probs"]
    assert not torch.allclose(probs[0], probs[1])


def test_retrieval_loss_prefers_matching_pairs():
    spec = TaskSpec(name="s", kind=TaskKind.RETRIEVAL, format="codesearchnet", metrics=["mrr"])
    head = build_head(spec, 8, {"dim": 8, "scale": 20.0})
    with torch.no_grad():
        head.projection.weight.copy_(torch.eye(8))
        head.projection.bias.zero_()
    assert head.inputs == ("query", "code")
    matched = head.loss({"query": _vectors([0, 1, 2, 3]), "code": _vectors([0, 1, 2, 3])}, {})
    shuffled = head.loss({"query": _vectors([0, 1, 2, 3]), "code": _vectors([3, 2, 1, 0])}, {})
    assert matched < 0.01 < shuffled
