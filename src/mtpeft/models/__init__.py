"""Backbone models: the registry of short names and loading (AutoModel + tokenizer + ModelInfo)."""

from mtpeft.models.loading import Backbone, ModelInfo, describe_model, load_backbone
from mtpeft.models.registry import MODELS, ModelEntry, resolve_tokenizer_path

__all__ = [
    "MODELS",
    "Backbone",
    "ModelEntry",
    "ModelInfo",
    "describe_model",
    "load_backbone",
    "resolve_tokenizer_path",
]
