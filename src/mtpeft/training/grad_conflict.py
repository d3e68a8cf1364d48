"""Each task's gradient on the shared module within a step, and the cosine between tasks' gradients.

The trainer runs one micro-batch per task and calls backward on each at once, so the shared parameters'
`.grad` grows task by task; the difference before and after a task's backward is that task's gradient.
Reading it off costs a copy of the shared gradients per micro-batch and no extra forward or backward
(the study's code instead runs a separate batch and backward per task each epoch). Measured on one CPU
thread, 4 tasks: 0.2 ms per measured step for tiny-bert LoRA, 0.75 ms for minilm LoRA (74k shared
parameters), 1.2 s and 350 MiB for minilm `full` (23M): with full fine-tuning, measure every 10+ steps.
The heads are left out: each belongs to one task, so only the shared parameters can carry a conflict.

Gradient conflict (`grad_conflict_every: K`): every K steps, the cosine between each pair of tasks'
gradients, averaged over the run; negative means the tasks pull the shared module apart. The study
calls a pair "conflicting" below -0.05 and "aligned" above +0.05 (`CONFLICT_BAND`).
With several processes (DDP), the backward passes before a step's last one accumulate each process's
own gradient (`no_sync`) and the last one all-reduces the whole sum, so the deltas read off are this
process's until the last; `synchronize` then averages the earlier tasks' gradients over the processes
(one all-reduce) and takes the last task's as the all-reduced total less those: the same gradients one
process would measure on the whole global batch.
With FSDP each process holds a shard of every gradient, reduce-scattered after each backward of a
measured step, so each delta is already this process's part of the global task gradient: the norms and
dot products are summed over the shards (`sharded=True`, one all-reduce each) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch

CONFLICT_BAND = 0.05  # |cosine| below it: "neutral" (the study's threshold)


class TaskGradients:
    """Per-task gradients on `parameters` in one step, from the growth of their `.grad` per backward."""

    def __init__(self, parameters: list[torch.nn.Parameter], *, sharded: bool = False) -> None:
        self.parameters = parameters
        self.sharded = sharded  # FSDP: the vectors are this process's shards (see the module's text)
        self._previous: torch.Tensor | None = None
        self._deltas: list[tuple[str, torch.Tensor]] = []  # per backward, in order
        self.by_task: dict[str, torch.Tensor] = {}  # flattened, float32; a task seen twice: the sum

    def _flat(self) -> torch.Tensor:
        from mtpeft.modeling.fsdp import local

        parts = [
            local(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
            for p in self.parameters
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    def record(self, task: str) -> None:
        """Call right after `task`'s backward."""
        now = self._flat()
        delta = now if self._previous is None else now - self._previous
        self._previous = now
        self._deltas.append((task, delta))
        self._sum_by_task()

    def synchronize(self) -> None:
        """With several processes, after the step's last backward (see the module's text)."""
        from mtpeft.modeling.distributed import active, all_reduce_mean_

        if self.sharded or not active() or len(self._deltas) < 2:
            return
        earlier = torch.stack([delta for _, delta in self._deltas[:-1]])
        all_reduce_mean_(earlier)
        assert self._previous is not None
        last = self._previous - earlier.sum(0)  # `_previous`: the all-reduced total after the last backward
        tasks = [task for task, _ in self._deltas]
        self._deltas = [*zip(tasks[:-1], earlier.unbind(0), strict=True), (tasks[-1], last)]
        self._sum_by_task()

    @property
    def deltas(self) -> list[tuple[str, torch.Tensor]]:
        """(task, gradient) of each backward of the step, in order (training/affinity.py reads them)."""
        return list(self._deltas)

    def _sum_by_task(self) -> None:
        self.by_task = {}
        for task, delta in self._deltas:
            self.by_task[task] = delta if task not in self.by_task else self.by_task[task] + delta

    def _dot(self, u: torch.Tensor, v: torch.Tensor) -> float:
        if self.sharded:
            from mtpeft.modeling.fsdp import sharded_dot

            return sharded_dot(u, v)
        return float(u @ v)

    def _norm(self, v: torch.Tensor) -> float:
        return math.sqrt(self._dot(v, v)) if self.sharded else float(v.norm())

    def norms(self) -> dict[str, float]:
        return {task: self._norm(v) for task, v in self.by_task.items()}

    def cosines(self) -> dict[tuple[str, str], float]:
        """Cosine of each pair of tasks of the step (pairs in the order the tasks came); NaN if one is 0."""
        result: dict[tuple[str, str], float] = {}
        for a, b in combinations(self.by_task, 2):
            u, v = self.by_task[a], self.by_task[b]
            denominator = self._norm(u) * self._norm(v)
            result[(a, b)] = self._dot(u, v) / denominator if denominator > 0 else math.nan
        return result


def pair_key(a: str, b: str) -> str:
    """A pair's key in the JSON record: the two task names, sorted, joined by ' | '."""
    return " | ".join(sorted((a, b)))


@dataclass
class ConflictLog:
    """Cosines measured every `every` steps, averaged over the run; resumable through `state_dict`."""

    every: int
    history: list[dict[str, Any]] = field(default_factory=list)  # [{"step", "cosine": {pair: v}, "norm"}]

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def add(self, step: int, gradients: TaskGradients) -> None:
        cosines = {pair_key(a, b): value for (a, b), value in gradients.cosines().items()}
        self.history.append({"step": step, "cosine": cosines, "grad_norm": gradients.norms()})

    def summary(self) -> dict[str, Any]:
        """every, measurements, pairs {pair: {mean, min, max, n, verdict}}, grad_norm {task: mean}."""
        return {
            "every": self.every,
            "measurements": len(self.history),
            "pairs": {pair: _stats(values) for pair, values in self._series("cosine").items()},
            "grad_norm": {task: _mean(values) for task, values in self._series("grad_norm").items()},
        }

    def record(self) -> dict[str, Any]:
        """What the run folder's JSON holds: the summary and every measurement."""
        return self.summary() | {"history": self.history}

    def _series(self, key: str) -> dict[str, list[float]]:
        series: dict[str, list[float]] = {}
        for entry in self.history:
            for name, value in entry[key].items():
                if math.isfinite(value):
                    series.setdefault(name, []).append(value)
        return series

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _stats(values: list[float]) -> dict[str, Any]:
    mean = _mean(values)
    verdict = "conflict" if mean < -CONFLICT_BAND else "aligned" if mean > CONFLICT_BAND else "neutral"
    return {"mean": mean, "min": min(values), "max": max(values), "n": len(values), "verdict": verdict}
