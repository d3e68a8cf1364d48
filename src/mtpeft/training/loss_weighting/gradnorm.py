"""`gradnorm`: Chen, Badrinarayanan, Lee and Rabinovich (2018), "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks" (ICML).

Learned task weights w_i (start 1, renormalised to sum to the task count T after every update) scale
the task losses. After each step, with G_i = ||grad_W w_i L_i|| the norm of task i's weighted gradient
on the shared parameters W, G = mean_i G_i, L~_i = L_i(t) / L_i(0) and r_i = L~_i / mean_j L~_j (the
relative inverse training rate), the weights take one gradient step on

    L_grad = sum_i | G_i - G * r_i^alpha |     (the target G * r_i^alpha held constant),

whose gradient in w_i is sign(G_i - target_i) * G_i / w_i since G_i = w_i * ||grad_W L_i||. So a task
whose gradient is larger than its target loses weight, one that trains slower (r_i > 1) gains some.

W here is every shared trainable parameter (the PEFT module; the heads are task-specific), not the last
shared layer the paper uses. The paper picks that layer to make the extra per-task backward cheap; with
a frozen backbone the trainable shared parameters are spread over all layers, and the trainer already
computes each task's gradient on all of them in its per-task backward, so measuring them costs no extra
backward pass (a copy of the shared gradients per task and step: negligible for PEFT modules, about a
second per step for a fully fine-tuned 23M-parameter model on one CPU thread; training/grad_conflict.py).
L_i(0) is the first step's loss of task i. The weights step with Adam (lr option; the paper leaves the
optimiser of w to the training setup), and are kept above a small floor so that they stay positive
after a large step, as the study's implementation does.
"""

from __future__ import annotations

from typing import Any

import torch

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.training.loss_weighting.base import BufferAdam, LossWeighting, StepLosses

_MIN_WEIGHT = 1e-4


class GradNormWeighting(LossWeighting):
    """`gradnorm`: Chen et al. (2018): learned weights that bring each task's gradient norm on the shared
    module to the mean norm times its relative inverse training rate ^ alpha."""

    name = "gradnorm"
    description = LOSS_WEIGHTING_DESCRIPTIONS["gradnorm"]
    # alpha 1.5: the paper's setting for NYUv2 and the study's default; lr: Adam step on the weights.
    defaults = {"alpha": 1.5, "lr": 0.025}
    needs_gradient_norms = True

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__(tasks, **options)
        n = len(tasks)
        # Buffers, not Parameters: only L_grad moves the weights, never the model's loss.
        self.register_buffer("task_weights", torch.ones(n))
        self.register_buffer("initial_loss", torch.full((n,), float("nan")))
        self.optimizer = BufferAdam(n, lr=self.options["lr"])

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return self.task_weights[self.index(task)] * loss / n_tasks

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, (self.task_weights / len(self.tasks)).tolist(), strict=True))

    @torch.no_grad()
    def after_step(self, step: StepLosses) -> None:
        if not step.grad_norms:
            return
        present = [t for t in self.tasks if t in step.grad_norms and t in step.before]
        like = {"dtype": self.task_weights.dtype, "device": self.task_weights.device}
        rows = torch.tensor([self.index(t) for t in present], device=self.task_weights.device)
        losses = torch.tensor([step.before[t] for t in present], **like)
        unset = torch.isnan(self.initial_loss[rows])
        self.initial_loss[rows[unset]] = losses[unset]
        norms = torch.tensor([step.grad_norms[t] for t in present], **like)
        self._update(rows, norms, losses / self.initial_loss[rows].clamp(min=1e-12))

    def _update(self, rows: torch.Tensor, norms: torch.Tensor, loss_ratio: torch.Tensor) -> None:
        rate = loss_ratio / loss_ratio.mean().clamp(min=1e-12)  # relative inverse training rate r_i
        target = norms.mean() * rate.pow(self.options["alpha"])
        grad = torch.zeros_like(self.task_weights)
        grad[rows] = torch.sign(norms - target) * norms / self.task_weights[rows]  # d L_grad / d w_i
        self.optimizer.step(self.task_weights, grad)
        self.task_weights.clamp_(min=_MIN_WEIGHT)
        self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())
