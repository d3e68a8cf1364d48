"""How task losses combine into one: a small named set, each documented in one sentence."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class LossWeighting(nn.Module):
    """Combines task losses; `term(task, loss, n_tasks)` is one task's share of the step's total.

    Totals are sums of per-task terms, so each micro-batch can call backward on its own term
    (only one task's activations are held in memory at a time).
    """

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.term(t, loss, len(losses)) for t, loss in losses.items())

    def weights(self) -> dict[str, float]:
        raise NotImplementedError


class EqualWeighting(LossWeighting):
    """`equal`: the mean of the task losses of the step."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = tasks

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return loss / n_tasks

    def weights(self) -> dict[str, float]:
        return {t: 1.0 / len(self.tasks) for t in self.tasks}


class LearnedWeighting(LossWeighting):
    """`learned`: sum of losses weighted by a softmax over learned task logits (the study's choice)."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = tasks
        self.logits = nn.Parameter(torch.zeros(len(tasks)))

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        return self.logits.softmax(0)[self.tasks.index(task)] * loss

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.logits.detach().softmax(0).tolist(), strict=True))


class UncertaintyWeighting(LossWeighting):
    """`uncertainty`: Kendall et al. (2018): sum of exp(-s_k) * L_k + s_k with learned log-variances s_k."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = tasks
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        s = self.log_vars[self.tasks.index(task)]
        return torch.exp(-s) * loss + s

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, torch.exp(-self.log_vars.detach()).tolist(), strict=True))


LOSS_WEIGHTINGS: dict[str, Callable[[list[str]], LossWeighting]] = {
    "equal": EqualWeighting,
    "learned": LearnedWeighting,
    "uncertainty": UncertaintyWeighting,
}
