"""Prefix tuning and prompt tuning through peft (virtual tokens; no backbone weight is wrapped).

Both work for encoders (BERT) and decoders (Llama) with peft 0.21 / transformers 5 as FEATURE_EXTRACTION
models, and on decoders and encoder-decoders with an LM head as CAUSAL_LM / SEQ_2_SEQ_LM models (peft's
wrappers then add the virtual tokens in generate() too; tested in tests/peft_methods). The study used
prefix tuning for encoders only; here it is allowed for all. Prompt tuning prepends its virtual tokens to
the output too; AdaptedBackbone.forward strips them.
"""

from __future__ import annotations

from typing import Any

from peft import PrefixTuningConfig, PromptTuningConfig

from mtpeft.catalogue import METHOD_DESCRIPTIONS
from mtpeft.models.loading import ModelInfo
from mtpeft.peft_methods.peft_backed import PeftLibraryMethod


def _prefix_defaults(info: ModelInfo) -> dict[str, Any]:
    # 20 virtual tokens per layer; the reparametrising MLP (prefix_projection) is optional.
    return {"num_virtual_tokens": 20, "prefix_projection": False}


def _prompt_defaults(info: ModelInfo) -> dict[str, Any]:
    return {"num_virtual_tokens": 20}


PREFIX = PeftLibraryMethod(
    name="prefix",
    description=METHOD_DESCRIPTIONS["prefix"],
    defaults=_prefix_defaults,
    make_config=lambda info, options: PrefixTuningConfig(
        task_type=info.peft_task_type,
        num_virtual_tokens=options["num_virtual_tokens"],
        prefix_projection=options["prefix_projection"],
    ),
    # Scoring answer words runs the model's forward, where the prefix works; generate() does not keep it.
    generation_problem=(
        "peft 0.21 hands the prefix to the model as past_key_values, which transformers 5's generate() "
        "replaces with its own cache, so the prefix is lost while generating (a T5 generates exactly as "
        "without it)"
    ),
    merge_problem="its virtual tokens are no weight update that peft's add_weighted_adapter can combine",
    export_problem=(
        "its prefix enters every layer as past keys and values (peft's cache), a path this exporter does "
        "not support"
    ),
)

PROMPT = PeftLibraryMethod(
    name="prompt",
    description=METHOD_DESCRIPTIONS["prompt"],
    defaults=_prompt_defaults,
    make_config=lambda info, options: PromptTuningConfig(
        task_type=info.peft_task_type, num_virtual_tokens=options["num_virtual_tokens"]
    ),
    merge_problem="its virtual tokens are no weight update that peft's add_weighted_adapter can combine",
    export_problem=(
        "its virtual tokens are prepended inside peft's forward (embeddings and attention mask extended on "
        "every call), a path this exporter does not support"
    ),
)
