"""Config of the bottleneck adapter tuner (serial Houlsby/Pfeiffer adapters and parallel adapters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig
from transformers.activations import ACT2FN

from mtpeft.peft_methods.bottleneck.peft_type import extend_peft_type

PEFT_TYPE = extend_peft_type("BOTTLENECK")


@dataclass
class BottleneckConfig(PeftConfig):
    """A bottleneck adapter: down-projection -> non-linearity -> up-projection, added to a module's output.

    Args:
        target_modules: modules to adapt (exact names or name suffixes; a string is a regex). Serial:
            projections whose output gets `+ adapter(output)` (Houlsby: attention and FFN outputs; Pfeiffer:
            FFN output only). Parallel: FFN blocks that get `+ scaling * adapter(input)`.
        bottleneck_size: width of the bottleneck.
        non_linearity: an activation name from `transformers.activations.ACT2FN`.
        dropout: dropout inside the adapter, after the non-linearity.
        scaling: factor on the adapter output (He et al. 2022 use 4 for parallel adapters).
        parallel: parallel adapter instead of serial.
        init_weights: zero the up-projection, so the adapted model starts as the backbone.
    """

    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Modules to adapt: exact names, name suffixes, or a regex string."}
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Modules never to adapt (same matching as target_modules)."}
    )
    bottleneck_size: int = field(default=64, metadata={"help": "Width of the bottleneck."})
    non_linearity: str = field(default="relu", metadata={"help": "Activation name from ACT2FN."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout after the non-linearity."})
    scaling: float = field(default=1.0, metadata={"help": "Multiplier on the adapter output."})
    parallel: bool = field(default=False, metadata={"help": "Parallel adapter beside an FFN block."})
    init_weights: bool = field(default=True, metadata={"help": "Zero-initialise the up-projection."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Other modules to train and save (e.g. a head)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if self.bottleneck_size < 1:
            raise ValueError(f"bottleneck_size must be a positive integer, got {self.bottleneck_size}")
        if self.non_linearity not in ACT2FN:
            raise ValueError(f"unknown non_linearity '{self.non_linearity}'; choose one of {sorted(ACT2FN)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
