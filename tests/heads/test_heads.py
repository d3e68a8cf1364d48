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


def _encode(input_ids, attention_mask):
    return torch.nn.functional.one_hot(input_ids[:, 0] % 8, 8).float()


def test_pair_head_sees_both_snippets():
    spec = TaskSpec(name="c", kind=TaskKind.PAIR, format="bigclonebench", labels=["0", "1"], metrics=["f1"])
    head = build_head(spec, 8).eval()
    batch = {
        "input_ids": torch.tensor([[1], [1]]),
        "attention_mask": torch.ones(2, 1, dtype=torch.long),
        "input_ids_b": torch.tensor([[1], [2]]),
        "attention_mask_b": torch.ones(2, 1, dtype=torch.long),
    }
    probs = head.predict(_encode, batch)["probs"]
    assert not torch.allclose(probs[0], probs[1])


def test_retrieval_loss_prefers_matching_pairs():
    spec = TaskSpec(name="s", kind=TaskKind.RETRIEVAL, format="codesearchnet", metrics=["mrr"])
    head = build_head(spec, 8, {"dim": 8, "scale": 20.0})
    with torch.no_grad():
        head.projection.weight.copy_(torch.eye(8))
        head.projection.bias.zero_()
    ids = torch.arange(4).unsqueeze(1)
    ones = torch.ones(4, 1, dtype=torch.long)
    matched = head.loss(
        _encode,
        {"query_input_ids": ids, "query_attention_mask": ones, "input_ids": ids, "attention_mask": ones},
    )
    shuffled = head.loss(
        _encode,
        {
            "query_input_ids": ids,
            "query_attention_mask": ones,
            "input_ids": ids.flip(0),
            "attention_mask": ones,
        },
    )
    assert matched < 0.01 < shuffled
