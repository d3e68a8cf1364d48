"""`normalized`: the study's default weighting, as its replication code defines it.

Source: Akli et al.'s replication repository (Amal-AK/Multitask-finetune-, `run.py`, loss weighting
"normalized", the default of its `--loss_weighting`). There the weights are uniform for the first epoch;
after each epoch every task's weight becomes proportional to its mean training loss over that epoch,
w_i = n * L_i / sum_j L_j (mean weight 1), and the step's total is sum_i w_i * L_i / n. Its comments give
the reason: inverse-loss weighting (1/L_i) was avoided because all binary tasks start at the same BCE
(~0.69), and it would favour easy, converged tasks; w ~ L_i gives harder tasks more weight.

So, unlike the common "normalise each loss by its own scale" scheme, a task whose loss is 1000x larger
gets a 1000x larger weight here, not the same contribution; this follows the study's code, not its name.
"""

from __future__ import annotations

from typing import Any

import torch

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.training.loss_weighting.base import LossWeighting, StepLosses

_FLOOR = 1e-8  # the study's floor on a mean loss, so a task at zero loss keeps a positive weight


class NormalizedWeighting(LossWeighting):
    """`normalized`: the study's default: weights proportional to each task's mean training loss over the
    previous epoch (uniform in the first), mean weight 1."""

    name = "normalized"
    description = LOSS_WEIGHTING_DESCRIPTIONS["normalized"]
    # every: optimiser steps between weight updates; None = one epoch as the study's sampler counts it
    # (one pass over the largest task, smaller tasks re-sampled), the study's update period.
    defaults = {"every": None}

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__(tasks, **options)
        n = len(tasks)
        self.register_buffer("scale", torch.ones(n))  # w_i, mean 1 (uniform until the first update)
        self.register_buffer("loss_sum", torch.zeros(n, dtype=torch.float64))  # this period's losses
        self.register_buffer("loss_count", torch.zeros(n, dtype=torch.long))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.period = self.options["every"] or 1  # begin() sets it from the data when not given

    def begin(self, *, epoch_steps: int) -> None:
        self.period = self.options["every"] or max(1, epoch_steps)

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return self.scale[self.index(task)] * loss / n_tasks

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, (self.scale / len(self.tasks)).tolist(), strict=True))

    @torch.no_grad()
    def after_step(self, step: StepLosses) -> None:
        for task, value in step.before.items():
            self.loss_sum[self.index(task)] += value
            self.loss_count[self.index(task)] += 1
        self.steps_seen += 1
        if int(self.steps_seen) % self.period == 0:
            self._reweigh()

    def _reweigh(self) -> None:
        seen = self.loss_count > 0
        if bool(seen.any()):
            mean = (self.loss_sum[seen] / self.loss_count[seen]).clamp(min=_FLOOR).to(self.scale.dtype)
            # A task no batch of this period came from (sampled schedules) keeps its weight; the seen
            # ones share the rest of the total n in proportion to their mean losses.
            share = len(self.tasks) - float(self.scale[~seen].sum())
            self.scale[seen] = mean * share / mean.sum()
        self.loss_sum.zero_()
        self.loss_count.zero_()
