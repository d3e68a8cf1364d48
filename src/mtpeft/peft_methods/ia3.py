"""(IA)^3 through peft: learned vectors rescaling keys, values and the FFN's inner activations."""

from __future__ import annotations

from typing import Any

from peft import IA3Config
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as PEFT_IA3_FEEDFORWARD,
)
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as PEFT_IA3_TARGETS,
)

from mtpeft.catalogue import METHOD_DESCRIPTIONS
from mtpeft.models.loading import ModelInfo
from mtpeft.peft_methods.peft_backed import PeftLibraryMethod, target_list


def _defaults(info: ModelInfo) -> dict[str, Any]:
    # peft's table knows the key/value projections; its FFN entry for BERT ("output.dense") would also
    # catch the attention output, so the FFN part comes from our exact module names instead.
    peft_ffn = set(PEFT_IA3_FEEDFORWARD.get(info.model_type, []))
    attention = [m for m in PEFT_IA3_TARGETS.get(info.model_type, []) if m not in peft_ffn]
    ffn = list(info.ffn_output_modules)
    return {"target_modules": attention + ffn if attention and ffn else [], "feedforward_modules": ffn}


def _config(info: ModelInfo, options: dict[str, Any]) -> IA3Config:
    return IA3Config(
        task_type=info.peft_task_type,
        target_modules=target_list(options["target_modules"]),
        feedforward_modules=target_list(options["feedforward_modules"]),
    )


IA3 = PeftLibraryMethod(
    name="ia3",
    description=METHOD_DESCRIPTIONS["ia3"],
    defaults=_defaults,
    make_config=_config,
    # peft merges (IA)^3 vectors by a plain weighted sum only (no TIES, DARE, cat); not offered here.
    merge_problem="mtpeft merges LoRA modules only; peft offers no TIES, DARE or cat merge of (IA)^3 vectors",
    merges_on_export=True,  # the learned vectors rescale weight rows/columns: folded into them
)
