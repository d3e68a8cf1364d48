"""What we need to know about a model family: encoder, decoder or encoder-decoder; where PEFT attaches.

Keyed by `config.model_type`; families not listed fall back to `config.is_encoder_decoder`,
`config.is_decoder` / the `architectures` names and to peft's own LoRA target table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn
from transformers import PretrainedConfig

Architecture = Literal["encoder", "decoder", "encoder-decoder"]
Pooling = Literal["cls", "mean", "last-token"]


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module-name patterns (full-match regexes over `named_modules()` names) for one model family."""

    architecture: Architecture
    lora_targets: tuple[str, ...]
    ffn_output: str  # the FFN's output projection: a serial adapter goes right after it
    attention_output: str  # the attention block's output projection (Houlsby's second adapter)
    ffn_block: str  # the module a parallel adapter runs beside (see peft_methods/bottleneck/layer.py)


_BERT_LIKE = ArchitectureSpec(
    architecture="encoder",
    lora_targets=("query", "value"),
    # `layer.N.output.dense` is the FFN's output; `layer.N.attention.output.dense` must not match.
    ffn_output=r"(.*\.)?layer\.\d+\.output\.dense",
    attention_output=r"(.*\.)?layer\.\d+\.attention\.output\.dense",
    # BERT splits the FFN into `intermediate` and `output(hidden, input_tensor)`; the latter sees its input.
    ffn_block=r"(.*\.)?layer\.\d+\.output",
)
_LLAMA_LIKE = ArchitectureSpec(
    architecture="decoder",
    lora_targets=("q_proj", "v_proj"),
    ffn_output=r"(.*\.)?layers\.\d+\.mlp\.down_proj",
    attention_output=r"(.*\.)?layers\.\d+\.self_attn\.o_proj",
    ffn_block=r"(.*\.)?layers\.\d+\.mlp",
)

# T5 and CodeT5+ (model_type t5): the patterns match the encoder's and the decoder's blocks alike, so an
# adapter goes into both stacks (the study's CodeT5+ repair runs adapted both). `layer.N` is self-attention,
# then (decoder only) cross-attention, then the FFN (`DenseReluDense`, gated or not).
_T5_LIKE = ArchitectureSpec(
    architecture="encoder-decoder",
    lora_targets=("q", "v"),
    ffn_output=r"(.*\.)?block\.\d+\.layer\.\d+\.DenseReluDense\.wo",
    attention_output=r"(.*\.)?block\.\d+\.layer\.\d+\.(SelfAttention|EncDecAttention)\.o",
    ffn_block=r"(.*\.)?block\.\d+\.layer\.\d+\.DenseReluDense",
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,  # CodeBERT, UniXcoder, GraphCodeBERT
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "llama": _LLAMA_LIKE,  # SmolLM2, CodeLlama
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "t5": _T5_LIKE,  # T5, CodeT5, CodeT5+ 220m/770m
    "mt5": _T5_LIKE,
}

# Why these poolings: the study pooled encoders (UniXcoder) through [CLS]/the pooler, which BERT-style
# pre-training trains to summarise the sequence; in a causal decoder the first token sees nothing, so the
# study mean-pooled decoder states (more stable than the last token for small models and right padding).
# An encoder-decoder's heads read its encoder's states, which T5-style pre-training gives no summary token.
DEFAULT_POOLING: dict[Architecture, Pooling] = {
    "encoder": "cls",
    "decoder": "mean",
    "encoder-decoder": "mean",
}


def detect_architecture(config: PretrainedConfig) -> Architecture:
    spec = ARCHITECTURES.get(config.model_type)
    if spec is not None:
        return spec.architecture
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    names = config.architectures or []
    if getattr(config, "is_decoder", False) or any(n.endswith(("CausalLM", "LMHeadModel")) for n in names):
        return "decoder"
    return "encoder"


def default_lora_targets(config: PretrainedConfig) -> list[str]:
    spec = ARCHITECTURES.get(config.model_type)
    if spec is not None:
        return list(spec.lora_targets)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_LORA_TARGETS

    return list(PEFT_LORA_TARGETS.get(config.model_type, []))


def find_modules(model: nn.Module, model_type: str, role: str) -> list[str]:
    """Full names of the modules playing `role` ("ffn_output", "attention_output", "ffn_block").

    Full names, not suffixes, because in BERT the FFN output (`output.dense`) is a suffix of the attention
    output (`attention.output.dense`). Empty for families we have no pattern for.
    """
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        return []
    pattern = re.compile(getattr(spec, role))
    return [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
