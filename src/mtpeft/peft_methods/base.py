"""The contract every fine-tuning method meets, and the registry of methods by name.

A method turns a `Backbone` into an `AdaptedBackbone`: the same forward (token ids -> hidden states aligned
with the ids), some parameters trainable, and a `save()` that writes only what a deployment needs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mtpeft.errors import ConfigError
from mtpeft.models.loading import Backbone, ModelInfo

METHOD_FILE = "mtpeft_method.json"  # which method and options wrote a directory; read back by load_method


@runtime_checkable
class PeftMethod(Protocol):
    name: str
    description: str

    def apply(self, backbone: Backbone, options: dict[str, Any]) -> AdaptedBackbone: ...

    def load(self, backbone: Backbone, directory: Path) -> AdaptedBackbone:
        """Reload a saved module onto a fresh backbone (same model, same seed)."""
        ...


class AdaptedBackbone(nn.Module):
    """A backbone with a fine-tuning method applied.

    `base_model` is the module that does the work: a `peft.PeftModel` for PEFT methods, the plain
    transformers model for `full`. Applying a method modifies the backbone's model in place, so load a
    fresh backbone for each method.
    """

    def __init__(
        self, base_model: nn.Module, *, method: str, options: dict[str, Any], info: ModelInfo
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.method = method
        self.options = options
        self.info = info

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [batch, seq, hidden], one per input token."""
        hidden = self.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Prompt tuning prepends virtual tokens; drop them so pooling code only sees the real tokens.
        return hidden[:, hidden.shape[1] - input_ids.shape[1] :]

    @property
    def transformer(self) -> nn.Module:
        """The transformers model inside (for gradient checkpointing, config, ...)."""
        return self.base_model

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_module(directory)
        record = {"method": self.method, "options": self.options, "model": self.info.name}
        (directory / METHOD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _save_module(self, directory: Path) -> None:
        raise NotImplementedError

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stored_bytes(self) -> int:
        """Bytes that save() writes, measured by saving to a scratch folder (exact, incl. headers)."""
        with tempfile.TemporaryDirectory(prefix="mtpeft-size-") as scratch:
            self.save(Path(scratch))
            return sum(f.stat().st_size for f in Path(scratch).rglob("*") if f.is_file())

    def gradient_checkpointing_enable(self) -> None:
        """Trade compute for activation memory (off by default)."""
        # transformers 5 names it activation checkpointing; non-reentrant needs no grad on frozen inputs.
        self.transformer.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )

    def gradient_checkpointing_disable(self) -> None:
        self.transformer.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.transformer, "is_activation_checkpointing", False))


PEFT_METHODS: dict[str, PeftMethod] = {}


def register_method(method: PeftMethod) -> PeftMethod:
    if method.name in PEFT_METHODS:
        raise ValueError(f"a PEFT method named '{method.name}' is already registered")
    PEFT_METHODS[method.name] = method
    return method


def get_method(name: str) -> PeftMethod:
    try:
        return PEFT_METHODS[name]
    except KeyError:
        known = ", ".join(sorted(PEFT_METHODS))
        raise ConfigError(f"unknown PEFT method '{name}'; choose one of: {known}", field="method") from None


def apply_method(backbone: Backbone, name: str, options: dict[str, Any] | None = None) -> AdaptedBackbone:
    return get_method(name).apply(backbone, dict(options or {}))


def load_method(backbone: Backbone, directory: Path) -> AdaptedBackbone:
    """Reload whatever method `AdaptedBackbone.save` wrote into `directory`."""
    return get_method(read_method_record(directory)["method"]).load(backbone, Path(directory))


def read_method_record(directory: Path) -> dict[str, Any]:
    path = Path(directory) / METHOD_FILE
    if not path.is_file():
        raise ConfigError(
            f"{directory} holds no saved mtpeft module (no {METHOD_FILE}); pass the folder save() wrote"
        )
    return json.loads(path.read_text())


def resolve_options(method: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the user's options; unknown names and wrong types are ConfigErrors."""
    for key, value in options.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(
                f"'{key}' is not an option of PEFT method '{method}' (its options: {known})", field=key
            )
        _check_type(method, key, value, defaults[key])
    return {**defaults, **options}


def _check_type(method: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        expected: tuple[type, ...] = (bool,)
    elif isinstance(default, int):
        expected = (int,)
    elif isinstance(default, float):
        expected = (int, float)
    elif isinstance(default, list):
        expected = (list, tuple, str)
    else:
        return
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        wanted = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"option '{key}' of '{method}' must be {wanted}, got {value!r}", field=key)
