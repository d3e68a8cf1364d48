"""LoRA and DoRA through peft's `LoraConfig` (DoRA is LoRA with `use_dora=True`)."""

from __future__ import annotations

from typing import Any

from peft import LoraConfig

from mtpeft.catalogue import METHOD_DESCRIPTIONS
from mtpeft.models.loading import ModelInfo
from mtpeft.peft_methods.peft_backed import PeftLibraryMethod, target_list


def _defaults(info: ModelInfo) -> dict[str, Any]:
    # r=8, alpha=16 (scale 2) and dropout 0.1 are the common settings for models of this size.
    return {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": list(info.lora_targets)}


def _lora_config(info: ModelInfo, options: dict[str, Any], *, use_dora: bool) -> LoraConfig:
    return LoraConfig(
        task_type=info.peft_task_type,
        r=options["r"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        target_modules=target_list(options["target_modules"]),
        use_dora=use_dora,
    )


LORA = PeftLibraryMethod(
    name="lora",
    description=METHOD_DESCRIPTIONS["lora"],
    defaults=_defaults,
    make_config=lambda info, options: _lora_config(info, options, use_dora=False),
    merge_problem=None,  # add_weighted_adapter's own case
    merges_on_export=True,  # W + BA/r*alpha: the exported graph is the plain backbone, as fast
)

DORA = PeftLibraryMethod(
    name="dora",
    description=METHOD_DESCRIPTIONS["dora"],
    defaults=_defaults,
    make_config=lambda info, options: _lora_config(info, options, use_dora=True),
    # add_weighted_adapter combines lora_A/lora_B only: the merged module would keep the base weights'
    # norms as its magnitude vectors, not the trained ones.
    merge_problem="peft's add_weighted_adapter does not merge DoRA's trained magnitude vectors",
    merges_on_export=True,  # the magnitude-rescaled W + BA folds into W too (peft's merge)
)
