"""The contract every loss weighting meets, and what the trainer tells it about each step.

The trainer runs one micro-batch per task and calls backward on each task's `term` at once (only one
task's activations are held at a time), so a weighting sees its tasks one at a time. Weightings that
need more than the loss of the micro-batch in hand declare it, and the trainer provides it:

- `gradient_scale(losses)`: a factor on the step's accumulated gradients, for a normaliser that needs
  every task's loss of the step (FAMO's c), applied before clipping;
- `needs_gradient_norms`: the norm of each task's gradient on the shared parameters (GradNorm);
- `needs_losses_after`: the same batches' losses once the optimiser step is applied (FAMO);
- `after_step(StepLosses)`: called after every optimiser step with what was asked for.

State that must survive a resume is kept in buffers: they are part of the model's state dict, which
accelerate's checkpoints save and load (nn.Parameters would be trained by the model's optimiser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mtpeft.errors import ConfigError

OPTIONS_FIELD = "loss_weighting_options"


@dataclass
class StepLosses:
    """What one optimiser step measured, per task present in the step."""

    before: dict[str, float]  # each task's loss on its batches of the step (mean over them)
    after: dict[str, float] | None = None  # the same batches after the step (needs_losses_after)
    # The norm of the gradient of each task's term on the shared parameters (needs_gradient_norms).
    grad_norms: dict[str, float] | None = None


class LossWeighting(nn.Module):
    """Combines task losses; `term(task, loss, n_tasks)` is one task's share of the step's total."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, from mtpeft.catalogue (shown by `mtpeft methods`)
    defaults: ClassVar[dict[str, Any]] = {}  # every option with its default; others are refused by name
    needs_gradient_norms: ClassVar[bool] = False
    needs_losses_after: ClassVar[bool] = False

    def __init__(self, tasks: list[str], **options: Any) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.options = resolve_options(self.name, self.defaults, options)

    def index(self, task: str) -> int:
        return self.tasks.index(task)

    def term(self, task: str, loss: torch.Tensor, n_tasks: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.term(t, loss, len(losses)) for t, loss in losses.items())

    def weights(self) -> dict[str, float]:
        """The weight each task's loss gets now (what train.log and the validation history show)."""
        raise NotImplementedError

    def begin(self, *, epoch_steps: int) -> None:
        """Called once before training (and again on resume): steps in one pass over the largest task."""

    def gradient_scale(self, losses: dict[str, float]) -> float:
        return 1.0

    def after_step(self, step: StepLosses) -> None:
        """Called after each optimiser step (before gradients are cleared)."""


def resolve_options(name: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the user's options; unknown names and bad values name the field."""
    for key, value in options.items():
        field = f"{OPTIONS_FIELD}.{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(
                f"'{key}' is not an option of loss weighting '{name}' (its options: {known})", field=field
            )
        _check_value(name, key, value, defaults[key], field)
    return {**defaults, **options}


def _check_value(name: str, key: str, value: Any, default: Any, field: str) -> None:
    # Every option is a number: a rate or an exponent (>= 0), or a step count (a whole number >= 1);
    # None only where the default is None, meaning "derived from the run" (e.g. one epoch).
    if value is None and default is None:
        return
    whole = default is None or isinstance(default, int)
    number = isinstance(value, int if whole else (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < (1 if whole else 0):
        wanted = "a whole number >= 1" if whole else "a number >= 0"
        raise ConfigError(
            f"option '{key}' of loss weighting '{name}' must be {wanted}, got {value!r}", field=field
        )


class BufferAdam(nn.Module):
    """Adam (Kingma & Ba 2015; L2 weight decay as torch.optim.Adam) on one tensor of task weights.

    Its moments are buffers, so they are checkpointed with the model and a resumed run continues the
    same updates; a torch optimiser's state would not be in the model's state dict.
    """

    def __init__(
        self, size: int, *, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999)
    ) -> None:
        super().__init__()
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, 1e-8
        self.register_buffer("exp_avg", torch.zeros(size))
        self.register_buffer("exp_avg_sq", torch.zeros(size))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        grad = grad + self.weight_decay * param if self.weight_decay else grad
        self.steps += 1
        self.exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        t = int(self.steps)
        denominator = (self.exp_avg_sq / (1 - beta2**t)).sqrt_().add_(self.eps)
        param.addcdiv_(self.exp_avg, denominator, value=-self.lr / (1 - beta1**t))
