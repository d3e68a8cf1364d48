"""One code path for every method that Hugging Face `peft` runs (its own tuners and our bottleneck tuner)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn

from mtpeft.errors import ConfigError
from mtpeft.models.loading import Backbone, ModelInfo
from mtpeft.peft_methods.base import AdaptedBackbone, read_method_record, resolve_options

NOT_MERGEABLE = "peft's add_weighted_adapter merges LoRA modules, and this method's module is not one"


class PeftAdaptedBackbone(AdaptedBackbone):
    """`base_model` is a `peft.PeftModel`; save() writes peft's adapter folder, loadable with plain peft."""

    @property
    def transformer(self) -> nn.Module:
        return self.base_model.get_base_model()

    def _save_module(self, directory: Path, state_dict: dict[str, Any] | None) -> None:
        # peft picks the adapter's tensors out of a given full state dict (its `state_dict` keyword).
        self.base_model.save_pretrained(str(directory), state_dict=state_dict)
        # peft also writes a model card; a deployment does not need it, and it would inflate stored_bytes.
        (directory / "README.md").unlink(missing_ok=True)


@dataclass(frozen=True)
class PeftLibraryMethod:
    """A fine-tuning method expressed as a peft config.

    `defaults(info)` gives every option with its default for this model (so unknown options can be
    rejected by name); `make_config(info, options)` turns the resolved options into a `PeftConfig`.
    """

    name: str
    description: str
    defaults: Callable[[ModelInfo], dict[str, Any]]
    make_config: Callable[[ModelInfo, dict[str, Any]], PeftConfig]
    # Why the method cannot generate text (generation tasks are then refused), if it cannot.
    generation_problem: str | None = None
    # Why `mtpeft merge` cannot merge runs of this method (None: it can, through peft's
    # add_weighted_adapter). Refused unless a method says otherwise.
    merge_problem: str | None = NOT_MERGEABLE
    # `mtpeft export` (mtpeft/export/): whether the module folds into the backbone's weights (peft's
    # merge_and_unload: the graph is the plain backbone), and why it cannot be exported at all, if it cannot
    # (a method neither merged nor refused runs inside the graph as it runs in PyTorch).
    merges_on_export: bool = False
    export_problem: str | None = None

    def apply(self, backbone: Backbone, options: dict[str, Any]) -> PeftAdaptedBackbone:
        resolved = resolve_options(self.name, self.defaults(backbone.info), options)
        _require_targets(self.name, backbone.info, resolved)
        config = self._config(backbone.info, resolved)
        try:
            with _quiet_deprecations():
                peft_model = get_peft_model(backbone.model, config)
        except ValueError as err:  # e.g. target modules not found in the model
            raise ConfigError(
                f"PEFT method '{self.name}' on {backbone.info.name}: {err}", field="options"
            ) from err
        return PeftAdaptedBackbone(peft_model, method=self.name, options=resolved, info=backbone.info)

    def load(self, backbone: Backbone, directory: Path) -> PeftAdaptedBackbone:
        record = read_method_record(directory)
        config = PeftConfig.from_pretrained(str(directory))
        # Reloaded modules stay trainable, except prompt/prefix tuning: peft refuses to train a reloaded
        # prompt (it may have been saved after its reparametrisation), so those come back frozen.
        with _quiet_deprecations():
            peft_model = PeftModel.from_pretrained(
                backbone.model, str(directory), config=config, is_trainable=not config.is_prompt_learning
            )
        if config.is_prompt_learning:  # peft leaves the prompt encoder's requires_grad on; make it match
            peft_model.requires_grad_(False)
        return PeftAdaptedBackbone(
            peft_model, method=self.name, options=record["options"], info=backbone.info
        )

    def _config(self, info: ModelInfo, options: dict[str, Any]) -> PeftConfig:
        try:
            return self.make_config(info, options)
        except (TypeError, ValueError) as err:  # peft validates its configs in __post_init__
            raise ConfigError(
                f"invalid options for PEFT method '{self.name}': {err}", field="options"
            ) from err


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # peft 0.21 probes `model.is_gradient_checkpointing`, which transformers 5 deprecates with a FutureWarning
    # on every call; nothing for our users to act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _require_targets(method: str, info: ModelInfo, options: dict[str, Any]) -> None:
    """An empty default target list means we know no module names for this model family."""
    for key in ("target_modules", "feedforward_modules"):
        if key in options and options[key] == []:
            raise ConfigError(
                f"no default {key} for model type '{info.model_type}' with method '{method}'; "
                f"pass the module names as option '{key}'",
                field=key,
            )


def target_list(value: str | list[str]) -> str | list[str]:
    """Module names as peft wants them: a string stays a regex, tuples (from YAML/JSON) become lists."""
    return value if isinstance(value, str) else list(value)
