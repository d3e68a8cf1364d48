"""Classification head (binary, multiclass, pair): MLP hidden -> hidden/2 -> classes, cross-entropy.

Pairs are bi-encoded: each snippet goes through the shared backbone on its own (so each gets the
full max_length), and the head sees [u, v, |u - v|, u * v] (Sentence-BERT style), which is
symmetric in what it can learn about the two snippets.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtpeft.heads.base import TaskHead, register_head
from mtpeft.tasks.spec import TaskKind, TaskSpec


class ClassificationHead(TaskHead):
    def __init__(self, hidden_size: int, num_labels: int, *, pair: bool, dropout: float = 0.1) -> None:
        super().__init__()
        self.pair = pair
        in_size = hidden_size * 4 if pair else hidden_size
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_size, hidden_size // 2),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size // 2, num_labels),
        )

    def logits(self, encode, batch: dict[str, Any]) -> torch.Tensor:
        u = encode(batch["input_ids"], batch["attention_mask"])
        if not self.pair:
            return self.mlp(u)
        v = encode(batch["input_ids_b"], batch["attention_mask_b"])
        return self.mlp(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))

    def loss(self, encode, batch: dict[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(self.logits(encode, batch), batch["labels"])

    def predict(self, encode, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        probs = self.logits(encode, batch).softmax(-1)
        return {"y_pred": probs.argmax(-1), "probs": probs}


@register_head(TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.PAIR)
def _classification(task: TaskSpec, hidden_size: int, options: dict[str, Any]) -> TaskHead:
    return ClassificationHead(hidden_size, task.num_labels, pair=task.kind == TaskKind.PAIR)
