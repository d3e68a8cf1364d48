"""Fine-tuning methods by name: one shared code path (`apply_method`) for every method.

Importing this package also registers the `bottleneck` and `mtl_lora` tuners with Hugging Face peft, so
saved `adapter` / `parallel-adapter` / `mtl-lora` folders load with plain `peft.PeftModel.from_pretrained`.
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
from mtpeft.peft_methods.mtl_lora.method import MTL_LORA
from mtpeft.peft_methods.prompt_learning import PREFIX, PROMPT
from mtpeft.peft_methods.task_context import task_context

for _method in (LORA, DORA, IA3, PREFIX, PROMPT, ADAPTER, PARALLEL_ADAPTER, MTL_LORA, FULL):
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
    "task_context",
]
