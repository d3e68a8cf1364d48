"""`learned`: sum of losses weighted by a softmax over learned task logits (the study's first choice)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.training.loss_weighting.base import LossWeighting


class LearnedWeighting(LossWeighting):
    """`learned`: sum of losses weighted by a softmax over learned task logits (the study's choice)."""

    name = "learned"
    description = LOSS_WEIGHTING_DESCRIPTIONS["learned"]

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__(tasks, **options)
        # A Parameter: trained by the trainer's optimiser with the heads (MultiTaskModel.head_parameters).
        self.logits = nn.Parameter(torch.zeros(len(tasks)))

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return self.logits.softmax(0)[self.index(task)] * loss

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.logits.detach().softmax(0).tolist(), strict=True))
