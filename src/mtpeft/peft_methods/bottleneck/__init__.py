"""Bottleneck adapters as a Hugging Face `peft` tuner (peft layout: config.py, layer.py, model.py).

Importing this package registers the method with peft under the name "bottleneck".
"""

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method

from mtpeft.peft_methods.bottleneck.config import PEFT_TYPE, BottleneckConfig
from mtpeft.peft_methods.bottleneck.layer import BottleneckLayer, ParallelAdapter, SerialAdapter
from mtpeft.peft_methods.bottleneck.model import BottleneckModel

__all__ = ["BottleneckConfig", "BottleneckLayer", "BottleneckModel", "ParallelAdapter", "SerialAdapter"]

if PEFT_TYPE not in PEFT_TYPE_TO_TUNER_MAPPING:  # re-imports (importlib.reload) must not register twice
    register_peft_method(name="bottleneck", config_cls=BottleneckConfig, model_cls=BottleneckModel)
