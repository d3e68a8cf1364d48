"""Head contract and registry keyed by task kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtpeft.errors import ConfigError
from mtpeft.tasks.spec import TaskKind, TaskSpec


class TaskHead(nn.Module):
    """A head turns pooled backbone vectors into a loss (training) and predictions (evaluation).

    `encode` is the backbone + pooling, passed in so a head can encode one or two inputs
    (pairs, query/code) without knowing anything about the backbone.
    """

    def loss(self, encode: Callable[..., torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, encode: Callable[..., torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


HEADS: dict[TaskKind, Callable[[TaskSpec, int, dict[str, Any]], TaskHead]] = {}


def register_head(*kinds: TaskKind) -> Callable:
    def wrap(factory: Callable[[TaskSpec, int, dict[str, Any]], TaskHead]) -> Callable:
        for kind in kinds:
            HEADS[kind] = factory
        return factory

    return wrap


def build_head(task: TaskSpec, hidden_size: int, options: dict[str, Any] | None = None) -> TaskHead:
    from mtpeft.heads import classification, retrieval  # noqa: F401  (registers the heads)

    if task.kind not in HEADS:
        raise ConfigError(
            f"task '{task.name}' has kind '{task.kind.value}', which cannot be trained yet "
            f"(trainable kinds: {', '.join(sorted(k.value for k in HEADS))})",
            field="tasks",
        )
    return HEADS[task.kind](task, hidden_size, options or {})
