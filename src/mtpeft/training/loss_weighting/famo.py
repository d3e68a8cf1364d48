"""`famo`: Liu, Feng, Stone and Liu (2023), "FAMO: Fast Adaptive Multitask Optimization" (NeurIPS).

Task logits xi (start 0), z = softmax(xi). The model descends

    sum_i z_i * log(L_i) / c,   c = sum_i z_i / L_i  (held constant),

i.e. the convex combination sum_i [(z_i / L_i) / c] * grad L_i of the task gradients. After the step the
same batches are scored again, without gradients (FAMO's one extra forward per task; O(1) memory in the
task count), and delta_i = log L_i(before) - log L_i(after) is each task's decrease in log loss. The
logits take one Adam step (weight decay gamma) along the gradient of z . delta in xi,
z_i * (delta_i - z . delta): the task whose log loss decreased least gains weight.

This is Algorithm 2 of the paper and the authors' code (github.com/Cranial-XIX/FAMO, famo.py): lr 0.025,
gamma 1e-3 (the value of the paper's Algorithm 2; the authors' code uses 1e-5 to 1e-2 per benchmark),
lower loss bound 0. The trainer runs one micro-batch per task with its own backward, so the normaliser c,
which needs every task's loss of the step, is applied as `gradient_scale` to the accumulated gradients
before clipping; a task drawn several times in one step (sampled schedules) enters with the log of each
micro-batch's loss, which is exact for round-robin (one batch per task per step, the study's choice).
The extra forward is in the measured wall time but not in the FLOPs estimate (which counts training tokens).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.training.loss_weighting.base import BufferAdam, LossWeighting, StepLosses

_EPS = 1e-8  # the paper's constant inside the logs (losses are bounded below by 0)


class FamoWeighting(LossWeighting):
    """`famo`: Liu et al. (2023): softmax task weights moved after each step towards the tasks whose log
    loss decreased least (one extra forward per task to measure it)."""

    name = "famo"
    description = LOSS_WEIGHTING_DESCRIPTIONS["famo"]
    defaults = {"lr": 0.025, "gamma": 0.001}
    needs_losses_after = True

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__(tasks, **options)
        n = len(tasks)
        self.register_buffer("logits", torch.zeros(n))  # a buffer: only the FAMO update moves them
        self.optimizer = BufferAdam(n, lr=self.options["lr"], weight_decay=self.options["gamma"])

    def z(self) -> torch.Tensor:
        return self.logits.softmax(0)

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return self.z()[self.index(task)] * torch.log(loss + _EPS)

    def gradient_scale(self, losses: dict[str, float]) -> float:
        z = self.z()
        c = sum(float(z[self.index(t)]) / (value + _EPS) for t, value in losses.items())
        return 1.0 / c

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.z().tolist(), strict=True))

    @torch.no_grad()
    def after_step(self, step: StepLosses) -> None:
        if not step.after:
            return
        delta = torch.zeros_like(self.logits)
        for task, after in step.after.items():
            before = step.before[task]
            if math.isfinite(after) and math.isfinite(before):  # a lost measurement moves nothing
                delta[self.index(task)] = math.log(before + _EPS) - math.log(after + _EPS)
        z = self.z()
        grad = z * (delta - (z * delta).sum())  # vector-Jacobian product of softmax with delta
        self.optimizer.step(self.logits, grad)
