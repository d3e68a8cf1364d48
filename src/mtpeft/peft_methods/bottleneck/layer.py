"""Bottleneck adapter layers, following peft's tuner-layer contract (`BaseTunerLayer`).

Hand-written because AdapterHub `adapters` (which has them) pins transformers 4.x and peft has none.

- `SerialAdapter` wraps a projection f: y = f(x); y + s * up(act(down(y))). Placed after the FFN output
  projection it is Pfeiffer's adapter; after the attention output projection too, Houlsby's. Both sit
  before the block's residual add / LayerNorm, as in those papers.
- `ParallelAdapter` wraps an FFN block F (He et al. 2022): F(x) + s * up(act(down(x))). BERT splits its FFN
  in two and the second part, `BertOutput(hidden, input_tensor)`, computes LayerNorm(dense(hidden) +
  input_tensor) with `input_tensor` the FFN input x; passing x + s*adapter(x) as `input_tensor` gives exactly
  LayerNorm(FFN(x) + s*adapter(x) + x).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.activations import ACT2FN

from mtpeft.peft_methods.bottleneck.config import BottleneckConfig


class BottleneckLayer(BaseTunerLayer):
    # Containers keyed by adapter name; peft saves/loads/toggles whatever is listed here.
    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_act", "bottleneck_dropout", "bottleneck_scaling")

    def __init__(self, base_layer: nn.Module, features: int) -> None:
        self.base_layer = base_layer
        self.features = features
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_act = nn.ModuleDict()
        self.bottleneck_dropout = nn.ModuleDict()
        self.bottleneck_scaling: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters = []

    def update_layer(self, adapter_name: str, config: BottleneckConfig, **kwargs: Any) -> None:
        down = nn.Linear(self.features, config.bottleneck_size)
        up = nn.Linear(config.bottleneck_size, self.features)
        if config.init_weights:  # the adapter adds exactly zero at step 0: training starts from the backbone
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        reference = next(self.get_base_layer().parameters())
        self.bottleneck_down[adapter_name] = down.to(reference.device, reference.dtype)
        self.bottleneck_up[adapter_name] = up.to(reference.device, reference.dtype)
        self.bottleneck_act[adapter_name] = ACT2FN[config.non_linearity]
        self.bottleneck_dropout[adapter_name] = (
            nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        )
        self.bottleneck_scaling[adapter_name] = config.scaling
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def adapter_delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """Sum of the active adapters' outputs for input x, or None when none applies."""
        if self.disable_adapters:
            return None
        delta = None
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down = self.bottleneck_down[name]
            h = self.bottleneck_dropout[name](self.bottleneck_act[name](down(x.to(down.weight.dtype))))
            out = self.bottleneck_up[name](h) * self.bottleneck_scaling[name]
            delta = out if delta is None else delta + out
        return None if delta is None else delta.to(x.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "bottleneck adapters are non-linear and cannot be merged into the base weights; "
            "keep the adapter, or use unload() to drop it"
        )

    def unmerge(self) -> None:  # nothing is ever merged
        return None


class SerialAdapter(nn.Module, BottleneckLayer):
    """output + adapter(output), for a module with `out_features` (a Linear projection)."""

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, config: BottleneckConfig, **kwargs: Any
    ) -> None:
        super().__init__()
        features = getattr(base_layer, "out_features", None)
        if features is None:
            raise ValueError(
                f"a serial bottleneck adapter needs a module with out_features (a Linear), got "
                f"{type(base_layer).__name__}; target the projection, e.g. the FFN's output dense layer"
            )
        BottleneckLayer.__init__(self, base_layer, features)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        delta = self.adapter_delta(result)
        return result if delta is None else result + delta

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


class ParallelAdapter(nn.Module, BottleneckLayer):
    """block(x) + adapter(x) for an FFN block; for BERT's split FFN, see the module docstring."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: BottleneckConfig,
        *,
        hidden_size: int,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        BottleneckLayer.__init__(self, base_layer, hidden_size)
        # BertOutput-style blocks take the FFN input as `input_tensor` and add it themselves.
        self.adds_input_tensor = "input_tensor" in inspect.signature(base_layer.forward).parameters
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.adds_input_tensor:
            result = self.base_layer(x, *args, **kwargs)
            delta = self.adapter_delta(x)
            return result if delta is None else result + delta
        if args:
            ffn_input, args = args[0], args[1:]
        else:
            ffn_input = kwargs.pop("input_tensor")
        delta = self.adapter_delta(ffn_input)
        residual = ffn_input if delta is None else ffn_input + delta
        return self.base_layer(x, residual, *args, **kwargs)

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()
