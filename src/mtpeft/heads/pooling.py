"""Sequence pooling: turn [batch, seq, hidden] into [batch, hidden] using the attention mask."""

from __future__ import annotations

from collections.abc import Callable

import torch


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Right padding: the last real token sits at (number of real tokens - 1).
    last = mask.sum(1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cls": cls_pool,
    "mean": mean_pool,
    "last-token": last_token_pool,
}
