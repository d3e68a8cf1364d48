"""The MTL-LoRA layer, following peft's tuner-layer contract (`BaseTunerLayer`).

Hand-written: peft has no MTL-LoRA. For task t (from `task_context`, see peft_methods/task_context.py):

    y = W x + (alpha / r) * B_t Lambda_t A dropout(x),   B_t = sum_i softmax(w_t / T)_i B_i

Initialisation follows the authors' implementation (microsoft mLoRA, as in the study's `mlora/mlora.py`):
A as nn.Linear's default (Kaiming uniform), Lambda_t identity, B_i zero (the model starts unchanged), and
the mixing logits w_t Kaiming uniform: random, because with equal logits and equal (zero) B_i every B_i
gets the same gradient and the k up-projections would never differ.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.nn import functional as F

from mtpeft.peft_methods.mtl_lora.config import MtlLoraConfig
from mtpeft.peft_methods.task_context import current_task


class MtlLoraLayer(BaseTunerLayer):
    # Containers keyed by adapter name; peft saves/loads/toggles whatever is listed here.
    adapter_layer_names = ("mtl_lora_A", "mtl_lora_B", "mtl_lora_transform", "mtl_lora_mixing")
    other_param_names = ("mtl_lora_dropout", "mtl_lora_scaling", "mtl_lora_tasks", "mtl_lora_temperature")
    task_conditioned = True  # its output depends on the current task (peft_methods.task_context)

    def __init__(self, base_layer: nn.Module) -> None:
        self.base_layer = base_layer
        self.mtl_lora_A = nn.ParameterDict()  # [r, in]
        self.mtl_lora_B = nn.ParameterDict()  # [k, out, r]
        self.mtl_lora_transform = nn.ParameterDict()  # [tasks, r, r], or [tasks, r] when diagonal
        self.mtl_lora_mixing = nn.ParameterDict()  # [tasks, k] logits over the up-projections
        self.mtl_lora_dropout = nn.ModuleDict()
        self.mtl_lora_scaling: dict[str, float] = {}
        self.mtl_lora_tasks: dict[str, list[str]] = {}
        self.mtl_lora_temperature: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters = []

    def update_layer(self, adapter_name: str, config: MtlLoraConfig, **kwargs: Any) -> None:
        base = self.get_base_layer()
        reference = base.weight
        r, k, n = config.r, config.up_projections, len(config.tasks)
        like = {"device": reference.device, "dtype": reference.dtype}
        a = torch.empty(r, base.in_features, **like)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        b = torch.zeros(k, base.out_features, r, **like)
        if not config.init_weights:  # only for tests that need a non-trivial update from the start
            nn.init.normal_(b, std=0.02)
        eye = torch.eye(r, **like)
        transform = torch.ones(n, r, **like) if config.diagonal else eye.repeat(n, 1, 1)
        mixing = torch.empty(n, k, **like)
        nn.init.kaiming_uniform_(mixing, a=math.sqrt(5))
        self.mtl_lora_A[adapter_name] = nn.Parameter(a)
        self.mtl_lora_B[adapter_name] = nn.Parameter(b)
        self.mtl_lora_transform[adapter_name] = nn.Parameter(transform)
        self.mtl_lora_mixing[adapter_name] = nn.Parameter(mixing)
        dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        self.mtl_lora_dropout[adapter_name] = dropout
        self.mtl_lora_scaling[adapter_name] = config.lora_alpha / r
        self.mtl_lora_tasks[adapter_name] = list(config.tasks)
        self.mtl_lora_temperature[adapter_name] = config.temperature
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def task_index(self, adapter_name: str) -> int:
        """The current task's row; a module trained for one task needs no context."""
        tasks = self.mtl_lora_tasks[adapter_name]
        task = current_task()
        if task is None and len(tasks) == 1:
            return 0
        if task is None:
            raise RuntimeError(
                f"MTL-LoRA holds one transform per task ({', '.join(tasks)}) and no task was given: run the "
                "backbone inside `mtpeft.peft_methods.task_context(task)` (MultiTaskModel does)"
            )
        if task not in tasks:
            raise ValueError(f"MTL-LoRA was trained for tasks {', '.join(tasks)}, not '{task}'")
        return tasks.index(task)

    def task_up_projection(self, adapter_name: str, index: int) -> torch.Tensor:
        """B_t: the task's softmax mix of the shared up-projections, [out, r]."""
        logits = self.mtl_lora_mixing[adapter_name][index] / self.mtl_lora_temperature[adapter_name]
        weights = F.softmax(logits, -1)
        return torch.einsum("k,kor->or", weights, self.mtl_lora_B[adapter_name])

    def adapter_delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """Sum of the active adapters' updates for input x (for the current task), or None."""
        if self.disable_adapters:
            return None
        delta = None
        for name in self.active_adapters:
            if name not in self.mtl_lora_A:
                continue
            out = self._delta(name, x)
            delta = out if delta is None else delta + out
        return delta

    def _delta(self, name: str, x: torch.Tensor) -> torch.Tensor:
        index = self.task_index(name)
        a = self.mtl_lora_A[name]
        h = self.mtl_lora_dropout[name](x.to(a.dtype)) @ a.T
        transform = self.mtl_lora_transform[name][index]
        h = h * transform if transform.dim() == 1 else h @ transform.T
        out = h @ self.task_up_projection(name, index).T * self.mtl_lora_scaling[name]
        return out.to(x.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "MTL-LoRA's update depends on the task of each batch, so it cannot be merged into the shared "
            "base weights; keep the adapter"
        )

    def unmerge(self) -> None:  # nothing is ever merged
        return None


class MtlLoraLinear(nn.Module, MtlLoraLayer):
    """A linear layer with MTL-LoRA: base(x) + the current task's low-rank update."""

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, config: MtlLoraConfig, **kwargs: Any
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise ValueError(
                f"MTL-LoRA adapts nn.Linear layers, got {type(base_layer).__name__}; "
                "target the attention projections (the LoRA targets)"
            )
        MtlLoraLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        delta = self.adapter_delta(x)
        return result if delta is None else result + delta

    def __repr__(self) -> str:
        return "mtl_lora." + super().__repr__()
