"""Lookahead task affinity, as Task Affinity Grouping defines it (Fifty et al., "Efficiently Identifying
Task Groupings for Multi-Task Learning", NeurIPS 2021): how much a step on task i's gradient alone lowers
task j's loss, measured inside one multi-task run.

Every K steps (`affinity: {every: K}`), after the step's backward passes and before its optimiser step:
for each task i, the parameters the tasks train (the shared module and the heads) take one SGD step
theta - lr * g_i on task i's gradient alone, every task j's loss on its own batch of the step is computed
again, and Z[i][j] = 1 - L_j(after i's step) / L_j(before). Positive: a step for i helps j. The diagonal
Z[i][i] (i's step on its own loss) is kept, as TAG keeps it. The matrix stored is the mean over the run's
measurements (entry by entry: a task absent from a measured step, with a `proportional` schedule, leaves
its row and column out of that one).

- g_i is read between the step's per-task backward passes (training/grad_conflict.py's TaskGradients: no
  extra backward), divided by d term / d loss (the loss weighting's factor for that micro-batch: the
  gradient of the loss itself, as TAG steps on), averaged over the task's micro-batches of the step.
- lr: the learning rate the optimiser is about to apply at this step to the parameter's group (`lr` for
  the shared module, `head_lr` for the heads, warm-up and decay included), as TAG takes the optimiser's
  learning rate; the step itself is plain SGD (TAG's equation 1), not AdamW's update.
- The losses are computed in eval mode without gradients: no dropout, so before and after differ by the
  lookahead alone.
- Undone exactly: every parameter is copied back from a copy taken before (bit for bit), every module's
  train/eval flag and the random states (torch CPU and CUDA, Python, NumPy) are restored; the optimiser
  and the accumulated gradients are never touched (the lookahead is applied by hand). Training with
  affinity on gives the weights of the run without it, so `affinity` is not part of the run key.
- Cost: N + N^2 forward passes per measurement (every task before, every task after each task's step),
  counted as forward-only positions in the run's FLOPs estimate (~2 x backbone parameters each, like
  FAMO's extra forward) and in its wall time; the log keeps its own share of both (the overhead).
- One process only: several processes (DDP, FSDP) are refused before training (trainer.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtpeft.errors import ConfigError
from mtpeft.training.grad_conflict import TaskGradients

if TYPE_CHECKING:
    from mtpeft.config import TrainConfig
    from mtpeft.modeling.distributed import Shard

Batch = dict[str, Any]
LossFn = Callable[[str, Batch], float]  # a task's loss on a batch, no gradient


def check_supported(config: TrainConfig, shard: Shard) -> None:
    """Refuse, naming the field, what the lookahead affinity does not take (before anything trains)."""
    if config.affinity is None or len(config.tasks) < 2:
        return
    if shard.several:
        # Each process would have to step and score its share in lockstep and all-reduce every loss;
        # not built: the affinity run is one joint run, which one process trains.
        raise ConfigError(
            f"affinity is measured on one process only, and this run has {shard.size}: train the run "
            "that measures affinity with one process (plain `mtpeft train`), or drop `affinity`",
            field="affinity",
        )
    if config.mixed_precision == "fp16":
        raise ConfigError(
            "affinity with mixed_precision: fp16 is not supported (the loss scaler scales the gradients "
            "the lookahead steps on): use bf16 or no",
            field="mixed_precision",
        )


def loss_factor(term: torch.Tensor, loss: torch.Tensor) -> float:
    """d term / d loss: how the loss weighting scales this micro-batch's gradient. Back-propagates through
    the weighting alone (term is a scalar function of the scalar loss), keeping the graph for backward."""
    (factor,) = torch.autograd.grad(term, loss, retain_graph=True)
    return float(factor)


def task_gradients(
    recorded: TaskGradients, factors: list[float], tasks: list[str]
) -> dict[str, torch.Tensor]:
    """Each task's mean loss gradient over its micro-batches of the step (flat, as recorded). A task whose
    weighting gave its loss no weight (factor 0) cannot be measured and is left out."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    unweighted: set[str] = set()
    for (task, delta), factor in zip(recorded.deltas, factors, strict=True):
        if factor == 0:
            unweighted.add(task)
            continue
        part = delta / factor
        sums[task] = part if task not in sums else sums[task] + part
        counts[task] = counts.get(task, 0) + 1
    return {t: sums[t] / counts[t] for t in tasks if t in sums and t not in unweighted}


@contextmanager
def undone(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> Iterator[Callable[[], None]]:
    """Yields `reset()`, which copies every parameter back to its value on entry; on exit the
    parameters, the modules' train/eval flags and the random states are as they were on entry."""
    saved = [p.detach().clone() for p in parameters]
    modes = [(m, m.training) for m in model.modules()]
    states = _random_states()

    @torch.no_grad()
    def reset() -> None:
        for parameter, value in zip(parameters, saved, strict=True):
            parameter.copy_(value)  # a copy, not a subtraction: bit for bit

    try:
        yield reset
    finally:
        reset()
        for module, training in modes:
            module.training = training
        _restore_random_states(states)


def _random_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    states["numpy"] = np.random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _mean_losses(batches: list[tuple[str, Batch]], loss: LossFn) -> dict[str, float]:
    """Each task's loss on its batches of the step (the mean over them)."""
    totals: dict[str, list[float]] = {}
    for task, batch in batches:
        totals.setdefault(task, []).append(loss(task, batch))
    return {task: sum(values) / len(values) for task, values in totals.items()}


@torch.no_grad()
def lookahead(
    model: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    rates: list[float],
    gradients: dict[str, torch.Tensor],
    batches: list[tuple[str, Batch]],
    loss: LossFn,
) -> dict[tuple[str, str], float]:
    """Z[(i, j)] for every task i with a gradient and every task j with a batch (see the module's text);
    `gradients` are flat over `parameters`, each stepped at its own rate. Undone on return."""
    sizes = [p.numel() for p in parameters]
    result: dict[tuple[str, str], float] = {}
    with undone(model, parameters) as reset:
        model.eval()
        before = _mean_losses(batches, loss)
        for source, flat in gradients.items():
            for parameter, part, rate in zip(parameters, flat.split(sizes), rates, strict=True):
                parameter.add_(part.view_as(parameter).to(parameter.dtype), alpha=-rate)
            after = _mean_losses(batches, loss)
            reset()
            for target, value in after.items():
                if before[target] > 0 and math.isfinite(before[target]) and math.isfinite(value):
                    result[(source, target)] = 1.0 - value / before[target]
    return result


@dataclass
class AffinityLog:
    """Z measured every `every` steps, averaged over the run; resumable through `state_dict`."""

    every: int
    tasks: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)  # [{"step", "z": N x N, None unmeasured}]
    wall_time_s: float = 0.0  # spent measuring (the overhead)
    forward_positions: int = 0  # positions of the measuring forward passes

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def add(self, step: int, z: dict[tuple[str, str], float], *, seconds: float, positions: int) -> None:
        matrix = [[z.get((i, j)) for j in self.tasks] for i in self.tasks]
        self.history.append({"step": step, "z": matrix})
        self.wall_time_s += seconds
        self.forward_positions += positions

    def matrix(self) -> tuple[list[list[float | None]], list[list[int]]]:
        """The mean Z[i][j] over the measurements that measured it (None where none did), and how many."""
        n = len(self.tasks)
        sums = [[0.0] * n for _ in range(n)]
        counts = [[0] * n for _ in range(n)]
        for entry in self.history:
            for i, row in enumerate(entry["z"]):
                for j, value in enumerate(row):
                    if value is not None:
                        sums[i][j] += value
                        counts[i][j] += 1
        means = [[sums[i][j] / counts[i][j] if counts[i][j] else None for j in range(n)] for i in range(n)]
        return means, counts

    def summary(self, *, backbone_params: int) -> dict[str, Any]:
        """What the store keeps (details.affinity): the mean matrix, its counts and the overhead."""
        means, counts = self.matrix()
        return {
            "every": self.every,
            "tasks": list(self.tasks),
            "measurements": len(self.history),
            "z": means,
            "counts": counts,
            "definition": "Z[i][j] = 1 - L_j(after an SGD step on task i's gradient) / L_j(before)",
            "overhead": {
                "wall_time_s": self.wall_time_s,
                "forward_positions": self.forward_positions,
                "flops_estimate": 2.0 * backbone_params * self.forward_positions,
            },
        }

    def record(self, *, backbone_params: int) -> dict[str, Any]:
        """What RUN_DIR/affinity.json holds: the summary and every measurement."""
        return self.summary(backbone_params=backbone_params) | {"history": self.history}

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "wall_time_s": self.wall_time_s,
            "forward_positions": self.forward_positions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.wall_time_s = float(state.get("wall_time_s", 0.0))
        self.forward_positions = int(state.get("forward_positions", 0))
