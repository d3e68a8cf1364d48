"""The contract every fine-tuning method meets, and the registry of methods by name.

A method turns a `Backbone` into an `AdaptedBackbone`: the same forward (token ids -> hidden states aligned
with the ids), some parameters trainable, and a `save()` that writes only what a deployment needs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mtpeft.errors import ConfigError
from mtpeft.models.loading import Backbone, ModelInfo
from mtpeft.peft_methods.task_context import current_task, task_context

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
        """Hidden states [batch, seq, hidden], one per input token: a decoder's last layer (after its final
        norm), an encoder-decoder's encoder, whether or not the model carries an LM head."""
        read = HIDDEN_STATES[self.info.lm_head]
        hidden = read(self.base_model, self.transformer, input_ids, attention_mask)
        # Prompt tuning prepends virtual tokens; drop them so pooling code only sees the real tokens.
        return hidden[:, hidden.shape[1] - input_ids.shape[1] :]

    def lm_forward(self, **inputs: Any) -> Any:
        """The LM's own forward (outputs with `.logits`), through the method (virtual tokens included)."""
        return self.base_model(**inputs)

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """transformers' generate through the method (peft's LM wrappers add prompt/prefix tokens here too)"""
        return self.base_model.generate(**kwargs)

    @property
    def is_prompt_learning(self) -> bool:
        """Prompt/prefix tuning: virtual tokens, so no custom position ids or 4D masks reach the model."""
        config = getattr(self.base_model, "active_peft_config", None)
        return bool(getattr(config, "is_prompt_learning", False))

    @property
    def transformer(self) -> nn.Module:
        """The transformers model inside (for gradient checkpointing, config, ...)."""
        return self.base_model

    def save(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """`state_dict`: the weights to write, keyed as `base_model.state_dict()` (gathered from FSDP
        shards, modeling/fsdp.py); None: the module's own."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_module(directory, state_dict)
        record = {"method": self.method, "options": self.options, "model": self.info.name}
        (directory / METHOD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _save_module(self, directory: Path, state_dict: dict[str, torch.Tensor] | None) -> None:
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
        # The recomputation runs inside backward, outside the forward's task_context: carry the task over
        # (what a task-conditioned module, MTL-LoRA, reads).
        self.transformer.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False, "context_fn": _keep_task_on_recompute}
        )

    def gradient_checkpointing_disable(self) -> None:
        self.transformer.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.transformer, "is_activation_checkpointing", False))


def _keep_task_on_recompute() -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    """torch.utils.checkpoint's context_fn, called at forward time: (forward context, recompute context)."""
    return nullcontext(), task_context(current_task())


# ---- hidden states for pooled heads, by the LM head the backbone was loaded with --------------------------
HiddenReader = Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _bare_states(
    model: nn.Module, transformer: nn.Module, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _decoder_states(
    model: nn.Module, transformer: nn.Module, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    # The decoder stack's own output, caught on its way into the LM head: with `logits_to_keep=1` the head
    # computes one vocabulary row per sequence instead of one per token, and unlike output_hidden_states no
    # other layer's states are kept. Going through `model` keeps peft's prompt/prefix tokens in effect.
    captured: list[torch.Tensor] = []
    hook = transformer.base_model.register_forward_hook(
        lambda module, args, output: captured.append(output.last_hidden_state)
    )
    try:
        model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
    finally:
        hook.remove()
    return captured[-1]


def _encoder_states(
    model: nn.Module, transformer: nn.Module, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    # One decoder step (the start token) is all the decoder costs here; running the whole model rather than
    # its encoder alone keeps peft's prompt/prefix tuning, which wraps the model's forward, in effect.
    start = torch.full((ids.shape[0], 1), transformer.config.decoder_start_token_id, device=ids.device)
    return model(input_ids=ids, attention_mask=mask, decoder_input_ids=start).encoder_last_hidden_state


HIDDEN_STATES: dict[str | None, HiddenReader] = {
    None: _bare_states,
    "causal": _decoder_states,
    "seq2seq": _encoder_states,
}


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


def apply_method(
    backbone: Backbone, name: str, options: dict[str, Any] | None = None, *, tasks: list[str] | None = None
) -> AdaptedBackbone:
    """`tasks`: the run's task names, given to methods with a module part per task (`task_conditioned`,
    MTL-LoRA) as their option `tasks`; the other methods share everything and ignore them."""
    method = get_method(name)
    options = dict(options or {})
    if tasks is not None and getattr(method, "task_conditioned", False):
        options["tasks"] = list(tasks)
    return method.apply(backbone, options)


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
