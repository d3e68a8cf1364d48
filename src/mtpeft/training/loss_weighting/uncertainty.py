"""`uncertainty`: Kendall, Gal and Cipolla (2018), task weights from learned homoscedastic uncertainty."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.training.loss_weighting.base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    """`uncertainty`: Kendall et al. (2018): sum of exp(-s_k) * L_k + s_k with learned log-variances s_k."""

    name = "uncertainty"
    description = LOSS_WEIGHTING_DESCRIPTIONS["uncertainty"]

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__(tasks, **options)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        s = self.log_vars[self.index(task)]
        return torch.exp(-s) * loss + s

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, torch.exp(-self.log_vars.detach()).tolist(), strict=True))
