"""`equal`: the mean of the task losses of the step."""

from __future__ import annotations

import torch

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.training.loss_weighting.base import LossWeighting


class EqualWeighting(LossWeighting):
    """`equal`: the mean of the task losses of the step."""

    name = "equal"
    description = LOSS_WEIGHTING_DESCRIPTIONS["equal"]

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return loss / n_tasks

    def weights(self) -> dict[str, float]:
        return {t: 1.0 / len(self.tasks) for t in self.tasks}
