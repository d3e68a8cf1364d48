"""Fine-tuning methods by name: one shared code path (`apply_method`) for every method.

Importing this package also registers the `bottleneck` tuner with Hugging Face peft, so saved
`adapter` / `parallel-adapter` folders load with plain `peft.PeftModel.from_pretrained`.
"""

from mtpeft.peft_methods.adapters import ADAPTER, PARALLEL_ADAPTER
from mtpeft.peft_methods.base import (
    PEFT_METHODS,
    AdaptedBackbone,
    PeftMethod,
    apply_method,
    get_method,
    load_method,
    register_method,
)
from mtpeft.peft_methods.full import FULL
from mtpeft.peft_methods.ia3 import IA3
from mtpeft.peft_methods.lora import DORA, LORA
from mtpeft.peft_methods.prompt_learning import PREFIX, PROMPT

for _method in (LORA, DORA, IA3, PREFIX, PROMPT, ADAPTER, PARALLEL_ADAPTER, FULL):
    if _method.name not in PEFT_METHODS:
        register_method(_method)

__all__ = [
    "PEFT_METHODS",
    "AdaptedBackbone",
    "PeftMethod",
    "apply_method",
    "get_method",
    "load_method",
    "register_method",
]
