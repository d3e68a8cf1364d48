"""Backbone models: the registry of short names and loading (AutoModel + tokenizer + ModelInfo).

Names are resolved on first use (PEP 562): `mtpeft models` reads only the registry, and importing
`loading` pulls in torch and transformers, which takes seconds.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Backbone": "loading",
    "ModelInfo": "loading",
    "describe_model": "loading",
    "load_backbone": "loading",
    "MODELS": "registry",
    "ModelEntry": "registry",
    "resolve_tokenizer_path": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mtpeft.models' has no attribute '{name}'")
    return getattr(importlib.import_module(f"mtpeft.models.{_WHERE[name]}"), name)
