"""`full`: full fine-tuning, the reference the PEFT methods are measured against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtpeft.catalogue import METHOD_DESCRIPTIONS
from mtpeft.models.loading import Backbone
from mtpeft.peft_methods.base import AdaptedBackbone, read_method_record, resolve_options


class FullAdaptedBackbone(AdaptedBackbone):
    """Every backbone weight trains; save() writes the whole model (save_pretrained)."""

    def _save_module(self, directory: Path, state_dict: dict[str, Any] | None) -> None:
        self.base_model.save_pretrained(str(directory), state_dict=state_dict)


@dataclass(frozen=True)
class FullFineTuning:
    name: str = "full"
    description: str = METHOD_DESCRIPTIONS["full"]
    # What `mtpeft merge` says (peft_backed.PeftLibraryMethod.merge_problem).
    merge_problem: str | None = "it changes every base weight, and peft merges adapter modules only"
    # `mtpeft export`: the fine-tuned model itself is the graph (nothing to merge, nothing refused).
    merges_on_export: bool = False
    export_problem: str | None = None

    def apply(self, backbone: Backbone, options: dict[str, Any]) -> FullAdaptedBackbone:
        resolved = resolve_options(self.name, {}, options)
        backbone.model.requires_grad_(True)
        return FullAdaptedBackbone(backbone.model, method=self.name, options=resolved, info=backbone.info)

    def load(self, backbone: Backbone, directory: Path) -> FullAdaptedBackbone:
        record = read_method_record(directory)
        dtype = next(backbone.model.parameters()).dtype
        # The backbone's own class: a model saved with its LM head (generative tasks) reloads with it.
        model = type(backbone.model).from_pretrained(str(directory), dtype=dtype)
        model.requires_grad_(True)
        return FullAdaptedBackbone(model, method=self.name, options=record["options"], info=backbone.info)


FULL = FullFineTuning()
