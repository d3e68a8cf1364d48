"""Load a backbone: the transformers model + tokenizer + what the rest of mtpeft needs to know about it.

Without generative tasks a run loads `AutoModel` (no LM head), exactly as before they existed. A run with
any task trained through the language model (kind `generation`, or `formulation: instruct`) loads the
model with its LM head: `AutoModelForCausalLM` for decoders. Encoder-decoders (T5, CodeT5+) always load
as `AutoModelForSeq2SeqLM`: their bare `AutoModel` cannot run without decoder inputs, and pooled heads
read the encoder's states either way.
"""

from __future__ import annotations

import copy
import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mtpeft.errors import ModelLoadError
from mtpeft.models.architectures import (
    DEFAULT_POOLING,
    Architecture,
    default_lora_targets,
    detect_architecture,
    find_modules,
)
from mtpeft.models.registry import MODELS, ModelEntry

_HUB_PROBE_TIMEOUT_S = 3.0
LmHead = Literal["causal", "seq2seq"]  # which language-model head a backbone carries, if any
# The class that loads a model of each kind of LM head (None: the bare model, pooled heads only).
_AUTO_CLASSES: dict[LmHead | None, type] = {
    None: AutoModel,
    "causal": AutoModelForCausalLM,
    "seq2seq": AutoModelForSeq2SeqLM,
}


@dataclass
class ModelInfo:
    name: str
    source: str
    architecture: Architecture
    model_type: str
    hidden_size: int
    num_layers: int
    num_parameters: int
    # Defaults per architecture, justified in architectures.DEFAULT_POOLING: CLS for encoders (as the study
    # did for UniXcoder), mean over real tokens for decoders.
    default_pooling: Literal["cls", "mean", "last-token"]
    lora_targets: list[str]  # module-name suffixes for LoRA/DoRA (bert: query,value; llama: q_proj,v_proj)
    ffn_output_modules: list[str]  # full names of the FFN output projections (serial adapters go after them)
    attention_output_modules: list[str] = field(default_factory=list)  # Houlsby's second adapter position
    ffn_block_modules: list[str] = field(default_factory=list)  # what a parallel adapter runs beside
    lm_head: LmHead | None = None  # loaded with a causal or seq2seq LM head (generative tasks), or bare

    @property
    def peft_task_type(self) -> str:
        """peft's task type for this model: its LM wrappers handle generation with prompt/prefix tuning."""
        return {None: "FEATURE_EXTRACTION", "causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}[self.lm_head]


@dataclass
class Backbone:
    model: torch.nn.Module  # AutoModel (no LM head), or the *ForCausalLM / *ForSeq2SeqLM model (info.lm_head)
    tokenizer: PreTrainedTokenizerBase  # pad token always set; decoders pad on the right
    info: ModelInfo


def load_backbone(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, seed: int = 0, lm_head: bool = False
) -> Backbone:
    """A short name from `mtpeft models`, a local folder, or a Hugging Face hub id.

    The model is returned in eval mode; `seed` fixes any random initialisation (tiny models, new poolers).
    `lm_head`: load the model with its language-model head (a run with generative tasks).
    """
    entry = MODELS.get(name_or_path)
    with _seeded(seed):
        if entry is not None:
            model, tokenizer_path, source = _load_entry(entry, dtype, lm_head)
        else:
            model, tokenizer_path, source = _load_external(name_or_path, dtype, lm_head)
    model.eval()
    tokenizer = _load_tokenizer(tokenizer_path)
    info = describe_model(model, name=name_or_path, source=source)
    _set_padding(tokenizer, model, info)
    return Backbone(model=model, tokenizer=tokenizer, info=info)


def lm_head_of(config: PretrainedConfig, lm_head: bool, *, name: str) -> LmHead | None:
    """Which LM head a model with `config` is loaded with when `lm_head` is (not) wanted."""
    architecture = detect_architecture(config.get_text_config())
    if architecture == "encoder-decoder":
        return "seq2seq"
    if not lm_head:
        return None
    if architecture == "encoder":
        raise ModelLoadError(
            f"model '{name}' is an encoder ({config.model_type}), which has no language-model head to "
            "generate with; tasks trained through one (kind generation, or formulation: instruct) need a "
            "decoder such as smollm2-135m or an encoder-decoder such as a T5/CodeT5+ model"
        )
    return "causal"


def describe_model(model: PreTrainedModel, *, name: str, source: str) -> ModelInfo:
    config = model.config.get_text_config()
    architecture = detect_architecture(config)
    return ModelInfo(
        name=name,
        source=source,
        architecture=architecture,
        model_type=config.model_type,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_parameters=sum(p.numel() for p in model.parameters()),
        default_pooling=DEFAULT_POOLING[architecture],
        lora_targets=default_lora_targets(config),
        ffn_output_modules=find_modules(model, config.model_type, "ffn_output"),
        attention_output_modules=find_modules(model, config.model_type, "attention_output"),
        ffn_block_modules=find_modules(model, config.model_type, "ffn_block"),
        lm_head=_lm_head(model),
    )


def _lm_head(model: PreTrainedModel) -> LmHead | None:
    # Bare models (BertModel, LlamaModel) have no output embeddings; *ForCausalLM / *ForSeq2SeqLM do.
    if model.get_output_embeddings() is None:
        return None
    return "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal"


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed initialisation without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _load_entry(entry: ModelEntry, dtype: torch.dtype, lm_head: bool) -> tuple[PreTrainedModel, str, str]:
    folder = entry.loader()
    if entry.random_init is not None:
        config = entry.random_init()
        model = _AUTO_CLASSES[lm_head_of(config, lm_head, name=entry.name)].from_config(config).to(dtype)
    else:
        model = _pretrained(folder, dtype, lm_head, name=entry.name)
    return model, folder, entry.source


def _pretrained(source: str, dtype: torch.dtype, lm_head: bool, *, name: str, **kwargs) -> PreTrainedModel:
    """`source` loaded by the auto class its config and `lm_head` call for."""
    config = AutoConfig.from_pretrained(source, **kwargs)
    auto_class = _AUTO_CLASSES[lm_head_of(config, lm_head, name=name)]
    return auto_class.from_pretrained(source, dtype=dtype, **kwargs)


def _load_external(name: str, dtype: torch.dtype, lm_head: bool) -> tuple[PreTrainedModel, str, str]:
    if Path(name).is_dir():
        return _from_folder(name, dtype, lm_head), name, f"local folder {Path(name).resolve()}"
    cached = _from_hub_cache(name, dtype, lm_head)
    if cached is not None:
        return cached, name, f"Hugging Face hub '{name}' (local cache)"
    _require_hub(name)
    try:
        model = _pretrained(name, dtype, lm_head, name=name)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load model '{name}' from the Hugging Face hub: {err}") from err
    return model, name, f"Hugging Face hub '{name}'"


def _from_folder(folder: str, dtype: torch.dtype, lm_head: bool) -> PreTrainedModel:
    try:
        return _pretrained(folder, dtype, lm_head, name=folder)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"folder '{folder}' is not a loadable Hugging Face model (needs config.json and weights): {err}"
        ) from err


def _from_hub_cache(name: str, dtype: torch.dtype, lm_head: bool) -> PreTrainedModel | None:
    """The model from the local HF cache, or None if it is not there (never touches the network)."""
    try:
        return _pretrained(name, dtype, lm_head, name=name, local_files_only=True)
    except (OSError, ValueError):  # not cached, or not even a valid repo id
        return None


def _require_hub(name: str) -> None:
    """Fail at once, with what to do, when the hub cannot be used (instead of waiting on timeouts)."""
    reason = _hub_unavailable_reason()
    if reason is None:
        return
    known = ", ".join(MODELS)
    raise ModelLoadError(
        f"model '{name}' is not a local folder and not cached locally, and the Hugging Face hub is "
        f"unreachable ({reason}). Pass a local folder holding a saved model, or one of the shipped "
        f"models ({known}; see `mtpeft models`), or connect to the network and retry."
    )


def _hub_unavailable_reason() -> str | None:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{variable} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err}"
    return None


@functools.lru_cache(maxsize=8)
def _tokenizer_prototype(path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"no tokenizer could be loaded from '{path}': {err}") from err


def _load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    # Cached because the tiny test models are built many times per test run; copied because callers
    # may change padding settings.
    return copy.deepcopy(_tokenizer_prototype(path))


def _set_padding(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, info: ModelInfo) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"the tokenizer of '{info.name}' has neither a pad nor an end-of-sequence token; "
                "save one with a pad token set and load that folder"
            )
        tokenizer.pad_token = tokenizer.eos_token  # the usual choice for decoders; masked out anyway
    # Right padding keeps token i at position i for every row, which the pooling code relies on.
    tokenizer.padding_side = "right"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
