"""Cost accounting, measured where the work happens (tokens, wall time, memory); FLOPs estimated.

FLOPs estimate (labelled `train_flops_estimate` everywhere; N = backbone parameters, counted over every
position the model computed, padding included, since padding costs the same work):

- forward ~2·N per position (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", sec. 2.1);
- full fine-tuning adds a backward of ~4·N (activation and weight gradients): 6·N per position;
- with a frozen backbone (PEFT) the backward still propagates activation gradients through every layer
  (~2·N) but computes weight gradients only for the trainable parameters (~2·trainable):
  4·N + 2·trainable per position.
Attention's sequence-length term and the heads' own cost are left out (small at these lengths and sizes).
Forward-only passes a step makes besides its training ones (FAMO scores the step's batches again once the
step is applied) add ~2·N per position: the meter counts their positions apart.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
import torch

_STATE_KEYS = (
    "wall_time_s",
    "tokens",
    "padded_tokens",
    "forward_only_positions",
    "samples",
    "tokens_by_task",
    "peak_memory_bytes",
)


def train_flops_estimate(
    *, backbone_params: int, trainable_params: int, positions: int, forward_only_positions: int = 0
) -> float:
    """`positions`: trained (forward and backward); `forward_only_positions`: scored without a backward."""
    forward_only = 2.0 * backbone_params * forward_only_positions
    if trainable_params >= backbone_params:  # full fine-tuning: every weight gets a gradient
        return 6.0 * backbone_params * positions + forward_only
    return (4.0 * backbone_params + 2.0 * trainable_params) * positions + forward_only


class CostMeter:
    """Wall time, tokens, samples and peak memory of one training run; resumable via state_dict()."""

    def __init__(
        self, *, trainable_params: int, backbone_params: int, device: torch.device | str = "cpu"
    ) -> None:
        self.trainable_params = int(trainable_params)
        self.backbone_params = int(backbone_params)
        self.device = torch.device(device)
        self.wall_time_s = 0.0  # closed segments only; elapsed() adds the open one
        self.tokens = 0
        self.padded_tokens = 0
        self.forward_only_positions = 0
        self.samples = 0
        self.tokens_by_task: dict[str, int] = {}
        self.peak_memory_bytes = 0
        self._started: float | None = None

    # ---- time ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Open a timing segment (no-op while one is open)."""
        if self._started is None:
            self._started = time.perf_counter()

    def stop(self) -> None:
        """Close the open segment, adding its time; segments add up across stops and resumes."""
        if self._started is not None:
            self.wall_time_s += time.perf_counter() - self._started
            self._started = None

    def elapsed(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.wall_time_s + running

    # ---- work and memory -------------------------------------------------------------------------
    def add_batch(self, *, tokens: int, padded_tokens: int, samples: int, task: str) -> None:
        """`tokens`: real (non-padding) tokens; `padded_tokens`: all positions computed, padding included."""
        tokens, padded_tokens = int(tokens), int(padded_tokens)  # also accepts 0-d tensors
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self.samples += int(samples)
        self.tokens_by_task[task] = self.tokens_by_task.get(task, 0) + tokens

    def add_forward_only(self, *, positions: int) -> None:
        """A forward pass of the training loop with no backward (e.g. FAMO's loss after the step)."""
        self.forward_only_positions += int(positions)

    def flops_estimate(self) -> float:
        """train_flops_estimate of everything counted so far."""
        return train_flops_estimate(
            backbone_params=self.backbone_params,
            trainable_params=self.trainable_params,
            positions=self.padded_tokens,
            forward_only_positions=self.forward_only_positions,
        )

    def sample_memory(self) -> None:
        """Keep the peak: allocator peak on GPU, resident set size (sampled) on CPU."""
        if self.device.type == "cuda":
            current = torch.cuda.max_memory_allocated(self.device)
        else:
            current = psutil.Process().memory_info().rss
        self.peak_memory_bytes = max(self.peak_memory_bytes, int(current))

    # ---- results and resume ----------------------------------------------------------------------
    def report(self, *, stored_bytes: int, full_model_bytes: int) -> dict[str, Any]:
        self.sample_memory()
        wall = self.elapsed()
        per_second = 1.0 / wall if wall > 0 else 0.0
        return {
            "trainable_params": self.trainable_params,
            "backbone_params": self.backbone_params,
            "trainable_pct": 100.0 * self.trainable_params / max(self.backbone_params, 1),
            "stored_bytes": int(stored_bytes),
            "full_model_bytes": int(full_model_bytes),
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "padding_fraction": _padding_fraction(self.tokens, self.padded_tokens),
            "forward_only_positions": self.forward_only_positions,
            "train_flops_estimate": self.flops_estimate(),
            "wall_time_s": wall,
            "peak_memory_bytes": self.peak_memory_bytes,
            "samples": self.samples,
            "samples_per_s": self.samples * per_second,
            "tokens_per_s": self.tokens * per_second,
            "tokens_by_task": dict(self.tokens_by_task),
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable counters (the open segment's time included), for checkpoints."""
        state = {key: getattr(self, key) for key in _STATE_KEYS}
        return state | {"wall_time_s": self.elapsed(), "tokens_by_task": dict(self.tokens_by_task)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's counters; the meter is left stopped."""
        self._started = None
        self.wall_time_s = float(state.get("wall_time_s", 0.0))
        self.tokens = int(state.get("tokens", 0))
        self.padded_tokens = int(state.get("padded_tokens", 0))
        self.forward_only_positions = int(state.get("forward_only_positions", 0))  # absent before it existed
        self.samples = int(state.get("samples", 0))
        self.tokens_by_task = {k: int(v) for k, v in state.get("tokens_by_task", {}).items()}
        self.peak_memory_bytes = int(state.get("peak_memory_bytes", 0))


def _padding_fraction(tokens: int, positions: int) -> float:
    return 1.0 - tokens / positions if positions > 0 else 0.0


_SUMMED = (
    "trainable_params",
    "shared_params",
    "head_params",
    "stored_bytes",
    "full_model_bytes",
    "tokens",
    "padded_tokens",
    "forward_only_positions",
    "train_flops_estimate",
    "wall_time_s",
    "samples",
)


def sum_costs(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """A group of runs (single mode: one per task) as one cost: work and storage summed, peak memory max.

    The backbone is counted once (max, not sum): N single-task PEFT modules share one deployed backbone,
    so trainable_pct reads "all N modules as a share of one backbone".
    """
    total: dict[str, Any] = {key: sum(r.get(key, 0) for r in reports) for key in _SUMMED}
    total["backbone_params"] = max((r.get("backbone_params", 0) for r in reports), default=0)
    total["trainable_pct"] = 100.0 * total["trainable_params"] / max(total["backbone_params"], 1)
    total["peak_memory_bytes"] = max((r.get("peak_memory_bytes", 0) for r in reports), default=0)
    total["padding_fraction"] = _padding_fraction(total["tokens"], total["padded_tokens"])
    per_second = 1.0 / total["wall_time_s"] if total["wall_time_s"] > 0 else 0.0
    total["samples_per_s"] = total["samples"] * per_second
    total["tokens_per_s"] = total["tokens"] * per_second
    by_task: dict[str, int] = {}
    for report in reports:
        for task, tokens in report.get("tokens_by_task", {}).items():
            by_task[task] = by_task.get(task, 0) + tokens
    total["tokens_by_task"] = by_task
    total["runs"] = len(reports)
    return total
