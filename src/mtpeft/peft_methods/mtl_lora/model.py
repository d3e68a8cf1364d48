"""The MTL-LoRA tuner (a peft BaseTuner): wraps the target linear layers in MtlLoraLinear layers."""

from __future__ import annotations

from typing import Any

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from mtpeft.peft_methods.mtl_lora.config import MtlLoraConfig
from mtpeft.peft_methods.mtl_lora.layer import MtlLoraLayer, MtlLoraLinear


class MtlLoraModel(BaseTuner):
    """MTL-LoRA (Yang et al. 2025) for peft: `peft.get_peft_model(model, MtlLoraConfig(...))`; saved adapters
    reload with `peft.PeftModel.from_pretrained` once `mtpeft.peft_methods` is imported."""

    prefix: str = "mtl_lora_"
    tuner_layer_cls = MtlLoraLayer
    # No per-architecture defaults inside peft: mtpeft passes target_modules from its architecture table.
    target_module_mapping: dict[str, list[str]] = {}

    def _create_and_replace(
        self,
        config: MtlLoraConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        if isinstance(target, MtlLoraLayer):  # a second adapter on an already wrapped layer
            target.update_layer(adapter_name, config)
            return
        new_module = MtlLoraLinear(target, adapter_name, config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added, inactive adapter is not trained
        self._replace_module(parent, target_name, new_module, target)
