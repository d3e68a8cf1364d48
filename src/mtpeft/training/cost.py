"""Cost accounting, measured where the work happens (tokens, wall time, memory); FLOPs estimated.

FLOPs estimate (labelled as such everywhere): a forward pass costs ~2·N·tokens (N = backbone
parameters; Kaplan et al. 2020). Full fine-tuning adds a backward of ~4·N·tokens (activation and
weight gradients): 6·N·tokens. With a frozen backbone (PEFT) the backward still propagates
activation gradients through every layer (~2·N·tokens) but computes weight gradients only for the
trainable parameters (~2·trainable·tokens): 4·N·tokens + 2·trainable·tokens.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
import torch


class CostMeter:
    def __init__(
        self, *, trainable_params: int, backbone_params: int, device: torch.device | str = "cpu"
    ) -> None:
        self.trainable_params = trainable_params
        self.backbone_params = backbone_params
        self.device = torch.device(device)
        self.wall_time_s = 0.0
        self.tokens = 0
        self.padded_tokens = 0
        self.samples = 0
        self.tokens_by_task: dict[str, int] = {}
        self.peak_memory_bytes = 0
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            self.wall_time_s += time.perf_counter() - self._started
            self._started = None

    def add_batch(self, *, tokens: int, padded_tokens: int, samples: int, task: str) -> None:
        """`tokens`: real (non-padding) tokens; `padded_tokens`: all positions computed, padding included."""
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self.samples += samples
        self.tokens_by_task[task] = self.tokens_by_task.get(task, 0) + tokens

    def sample_memory(self) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = psutil.Process().memory_info().rss
        self.peak_memory_bytes = max(self.peak_memory_bytes, int(peak))

    def flops_estimate(self) -> float:
        positions = self.padded_tokens  # padding is computed too, so it costs FLOPs
        if self.trainable_params >= self.backbone_params:
            return 6.0 * self.backbone_params * positions
        return 4.0 * self.backbone_params * positions + 2.0 * self.trainable_params * positions

    def report(self, *, stored_bytes: int, full_model_bytes: int) -> dict[str, Any]:
        self.sample_memory()
        wall = max(self.wall_time_s, 1e-9)
        return {
            "trainable_params": self.trainable_params,
            "backbone_params": self.backbone_params,
            "trainable_pct": 100.0 * self.trainable_params / max(self.backbone_params, 1),
            "stored_bytes": stored_bytes,
            "full_model_bytes": full_model_bytes,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "padding_fraction": 1.0 - self.tokens / max(self.padded_tokens, 1),
            "train_flops_estimate": self.flops_estimate(),
            "wall_time_s": self.wall_time_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "samples": self.samples,
            "samples_per_s": self.samples / wall,
            "tokens_per_s": self.tokens / wall,
            "tokens_by_task": dict(self.tokens_by_task),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "wall_time_s",
                "tokens",
                "padded_tokens",
                "samples",
                "tokens_by_task",
                "peak_memory_bytes",
            )
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


_SUMMED = (
    "trainable_params",
    "shared_params",
    "head_params",
    "stored_bytes",
    "full_model_bytes",
    "tokens",
    "padded_tokens",
    "train_flops_estimate",
    "wall_time_s",
    "samples",
)


def sum_costs(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """A group of runs (single mode: one per task): totals summed, peak memory is the max."""
    total: dict[str, Any] = {k: sum(r.get(k, 0) for r in reports) for k in _SUMMED}
    total["backbone_params"] = max((r.get("backbone_params", 0) for r in reports), default=0)
    total["trainable_pct"] = 100.0 * total["trainable_params"] / max(total["backbone_params"], 1)
    total["peak_memory_bytes"] = max((r.get("peak_memory_bytes", 0) for r in reports), default=0)
    total["padding_fraction"] = 1.0 - total["tokens"] / max(total["padded_tokens"], 1)
    wall = max(total["wall_time_s"], 1e-9)
    total["samples_per_s"] = total["samples"] / wall
    total["tokens_per_s"] = total["tokens"] / wall
    total["runs"] = len(reports)
    return total
