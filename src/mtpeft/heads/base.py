"""The head contract: pooled vectors in, a loss or predictions out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskSpec

Vectors = Mapping[str, torch.Tensor]  # role -> pooled vectors [batch, hidden]


class TaskHead(nn.Module):
    """A head turns pooled backbone vectors into a loss (training) and predictions (evaluation, inference).

    `inputs` names the roles whose vectors it reads, e.g. ("code",), ("code", "code_b"), ("query", "code").
    The model encodes each distinct input of a batch once and hands every head the same vectors, so a
    head knows nothing of the backbone beyond its hidden size.
    """

    inputs: tuple[str, ...]

    def loss(self, vectors: Vectors, batch: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, vectors: Vectors) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def build_head(task: TaskSpec, hidden_size: int, options: dict[str, Any] | None = None) -> TaskHead:
    """The head of the task's kind (tasks/kinds/), for a backbone of `hidden_size`."""
    return kind_of(task).build_head(task, hidden_size, options or {})
