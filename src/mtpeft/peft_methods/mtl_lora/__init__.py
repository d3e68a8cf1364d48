"""MTL-LoRA as a Hugging Face `peft` tuner (peft layout: config.py, layer.py, model.py), and the mtpeft
method `mtl-lora` on it (method.py).

Importing this package registers the tuner with peft under the name "mtl_lora".
"""

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method

from mtpeft.peft_methods.mtl_lora.config import PEFT_TYPE, MtlLoraConfig
from mtpeft.peft_methods.mtl_lora.layer import MtlLoraLayer, MtlLoraLinear
from mtpeft.peft_methods.mtl_lora.model import MtlLoraModel

__all__ = ["MtlLoraConfig", "MtlLoraLayer", "MtlLoraLinear", "MtlLoraModel"]

if PEFT_TYPE not in PEFT_TYPE_TO_TUNER_MAPPING:  # re-imports (importlib.reload) must not register twice
    register_peft_method(name="mtl_lora", config_cls=MtlLoraConfig, model_cls=MtlLoraModel)
