"""What a model can take, read from its config alone (no weights): its position limit and hidden size.

A model with learned absolute position embeddings (BERT, RoBERTa, GPT-2, OPT, BART) has a table of
`max_position_embeddings` (GPT-2: `n_positions`) rows; a longer input fails at its first long batch
(an index or size error deep in the model). RoBERTa-style models start positions after the padding id,
so two rows of their table are never used. Models with rotary (Llama, Mistral, Qwen, GPT-NeoX),
relative (T5) or ALiBi (BLOOM) positions have no such table: their `max_position_embeddings` is the
length they were trained on, not a limit, so nothing is refused for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Models whose position ids start at padding_idx + 1 (`create_position_ids_from_input_ids`).
_PADDING_OFFSET_TYPES = {
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet", "ibert",
    "data2vec-text", "roberta-prelayernorm", "luke", "xmod", "markuplm", "layoutlmv3", "esm",
}  # fmt: skip
# Dimension of a retrieval projection never refused: the usual sizes (128-1024, the default 256) fit every
# model, tiny test models included. Beyond it the limit is the hidden size (see retrieval_dim_limit).
RETRIEVAL_DIM_FLOOR = 4096
RETRIEVAL_DIM_UNKNOWN_MODEL = 16384  # the largest hidden size of today's models, when the config is unknown


def position_limit(config: PretrainedConfig) -> int | None:
    """Tokens one sequence may hold, or None when the model has no hard limit (rotary/relative/ALiBi)."""
    config = config.get_text_config()
    if _relative_positions(config):
        return None
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if config.model_type in _PADDING_OFFSET_TYPES:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


def _relative_positions(config: PretrainedConfig) -> bool:
    rotary = any(getattr(config, key, None) for key in ("rope_parameters", "rope_theta", "rotary_dim"))
    t5_like = getattr(config, "relative_attention_num_buckets", None) and config.model_type != "mpnet"
    relative = getattr(config, "relative_attention", False)
    deberta = relative and not getattr(config, "position_biased_input", True)  # DeBERTa-v3
    alibi = getattr(config, "alibi", False) or config.model_type == "bloom"
    return bool(rotary or t5_like or deberta or alibi)


def hidden_size(config: PretrainedConfig) -> int | None:
    config = config.get_text_config()
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def retrieval_dim_limit(hidden: int | None) -> int:
    """The largest retrieval_dim accepted. The projection maps the pooled hidden vector linearly, so its
    output spans at most `hidden` dimensions: more add memory (dim x hidden weights, and every stored
    embedding) but no information. The floor keeps every usual size valid on small models."""
    return RETRIEVAL_DIM_UNKNOWN_MODEL if hidden is None else max(hidden, RETRIEVAL_DIM_FLOOR)


def model_config(name: str) -> PretrainedConfig | None:
    """The config of a model name as `load_backbone` resolves it, read without loading weights or using
    the network; None where that is not possible (an uncached hub id, a GGUF not converted yet)."""
    from transformers import AutoConfig

    from mtpeft.models.registry import MODELS

    entry = MODELS.get(name)
    try:
        if entry is not None and entry.random_init is not None:
            return entry.random_init()
        if entry is not None:
            folder = _converted_folder(name) if entry.name == "smollm2-135m" else entry.loader()
            return AutoConfig.from_pretrained(folder) if folder else None
        if Path(name).is_dir():
            return AutoConfig.from_pretrained(name)
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure only means "unknown": loading the model reports it
        return None


def _converted_folder(name: str) -> str | None:
    """smollm2's fp32 folder if converted already (converting takes ~30 s: not for a check)."""
    from mtpeft.models.gguf_cache import is_converted
    from mtpeft.models.registry import smollm2_cache_folder

    folder = smollm2_cache_folder()
    return str(folder) if is_converted(folder) else None
