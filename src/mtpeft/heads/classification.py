"""Classification head (binary, multiclass, pair): MLP hidden -> hidden/2 -> classes, cross-entropy.

One input: the MLP reads its pooled vector. Two inputs (pairs, bi-encoded: each snippet its own
backbone pass, so each gets the full max_length): it reads [u, v, |u - v|, u * v] (Sentence-BERT
style), which is symmetric in what it can learn about the two snippets.

Probabilities are softmax(logits / T): T is the task's temperature (mtpeft.evaluation.calibration), 1 until
a run's calibration sets it on load. It is a buffer outside the state dict, so heads.safetensors and best/
are the same with or without it; the raw `logits` come out beside the probabilities for fitting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mtpeft.heads.base import TaskHead, Vectors


class ClassificationHead(TaskHead):
    def __init__(
        self, hidden_size: int, num_labels: int, *, inputs: tuple[str, ...] = ("code",), dropout: float = 0.1
    ) -> None:
        super().__init__()
        if len(inputs) not in (1, 2):
            raise ValueError(f"a classification head reads one or two inputs, not {inputs}")
        self.inputs = tuple(inputs)
        in_size = hidden_size * 4 if self.is_pair else hidden_size
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_size, hidden_size // 2),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size // 2, num_labels),
        )
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    @property
    def is_pair(self) -> bool:
        return len(self.inputs) == 2

    def logits(self, vectors: Vectors) -> torch.Tensor:
        u = vectors[self.inputs[0]]
        if not self.is_pair:
            return self.mlp(u)
        v = vectors[self.inputs[1]]
        return self.mlp(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))

    def loss(self, vectors: Vectors, batch: Mapping[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(self.logits(vectors), batch["labels"])

    def predict(self, vectors: Vectors) -> dict[str, torch.Tensor]:
        # The one place a head's logits become probabilities: evaluation, analyze, compare, scan, serve.
        # T > 0 keeps the logits' order, so y_pred (the argmax) is the same whatever T is.
        logits = self.logits(vectors)
        probs = (logits / self.temperature).softmax(-1)
        return {"y_pred": logits.argmax(-1), "probs": probs, "logits": logits}

    def set_temperature(self, temperature: float) -> None:
        self.temperature.fill_(temperature)
