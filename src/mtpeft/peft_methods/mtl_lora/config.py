"""Config of the MTL-LoRA tuner (Yang et al., "MTL-LoRA: Low-Rank Adaptation for Multi-Task Learning",
AAAI 2025)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig

from mtpeft.peft_methods.bottleneck.peft_type import extend_peft_type

PEFT_TYPE = extend_peft_type("MTL_LORA")


@dataclass
class MtlLoraConfig(PeftConfig):
    """MTL-LoRA on linear layers: W x + (alpha / r) * sum_i softmax(w_t / T)_i B_i Lambda_t A x for task t.

    A (r x in) is shared by all tasks, Lambda_t (r x r, or diagonal) is task t's own transform, B_1..B_k
    (out x r) are shared up-projections that each task mixes with its own learned weights w_t.
    """

    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Linear layers to adapt: exact names, name suffixes, or a regex."}
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Modules never to adapt (same matching as target_modules)."}
    )
    r: int = field(default=8, metadata={"help": "Rank of the shared down-projection A."})
    lora_alpha: float = field(default=16, metadata={"help": "The update is scaled by alpha / r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the input of A."})
    tasks: list[str] = field(
        default_factory=lambda: ["default"],
        metadata={"help": "Task names, in order: one transform and one set of mixing weights each."},
    )
    up_projections: int = field(default=4, metadata={"help": "Number k of shared up-projections B_i."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the mixing weights."})
    diagonal: bool = field(default=False, metadata={"help": "Diagonal task transforms instead of r x r."})
    init_weights: bool = field(default=True, metadata={"help": "Zero B, so training starts from the model."})
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
        self.tasks = list(self.tasks)
        checks = {
            "r must be a positive integer": self.r >= 1,
            "up_projections must be a positive integer": self.up_projections >= 1,
            "temperature must be > 0": self.temperature > 0,
            "lora_dropout must be in [0, 1)": 0.0 <= self.lora_dropout < 1.0,
            "tasks must name at least one task, each once": bool(self.tasks)
            and len(set(self.tasks)) == len(self.tasks),
        }
        for problem, holds in checks.items():
            if not holds:
                raise ValueError(problem)
