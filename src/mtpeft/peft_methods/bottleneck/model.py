"""The bottleneck tuner (a peft BaseTuner): wraps the target modules in Serial/ParallelAdapter layers."""

from __future__ import annotations

from typing import Any

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from mtpeft.peft_methods.bottleneck.config import BottleneckConfig
from mtpeft.peft_methods.bottleneck.layer import BottleneckLayer, ParallelAdapter, SerialAdapter


class BottleneckModel(BaseTuner):
    """Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021; parallel: He et al. 2022) for peft.

    Use through `peft.get_peft_model(model, BottleneckConfig(...))`; saved adapters reload with
    `peft.PeftModel.from_pretrained` once `mtpeft.peft_methods` is imported (which registers the tuner).
    """

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    # No per-architecture defaults inside peft: mtpeft passes target_modules from its architecture table.
    target_module_mapping: dict[str, list[str]] = {}

    def _create_and_replace(
        self,
        config: BottleneckConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        if isinstance(target, BottleneckLayer):  # a second adapter on an already wrapped module
            target.update_layer(adapter_name, config)
            return
        new_module = self._create_new_module(config, adapter_name, target)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added, inactive adapter is not trained
        self._replace_module(parent, target_name, new_module, target)

    def _create_new_module(self, config: BottleneckConfig, adapter_name: str, target: nn.Module) -> nn.Module:
        if config.parallel:
            # Through the config object, not its dict: T5 calls it d_model and maps hidden_size onto it.
            model_config = getattr(self.model, "config", None)
            text_config = model_config.get_text_config() if model_config is not None else None
            hidden_size = getattr(text_config, "hidden_size", None)
            if hidden_size is None:
                raise ValueError("a parallel adapter needs the model config's hidden_size")
            return ParallelAdapter(target, adapter_name, config, hidden_size=hidden_size)
        return SerialAdapter(target, adapter_name, config)
