"""Prompting backends by name: `local` (a causal LM run here) and `openai` (an OpenAI-compatible server).

A model string picks its backend: `openai:http://HOST:PORT/v1` the openai one, anything else (a short
name, a hub id, a folder) the local one. Each factory imports its module only when called, so parsing a
config or listing things never imports torch or the openai client, and a missing backend module is an
error that says so, not an import failure at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from mtpeft.errors import ConfigError
from mtpeft.prompting.backends.base import Answer, Message, Prompt, PromptBackend, ScoringBackend
from mtpeft.registry import Registry

if TYPE_CHECKING:
    from mtpeft.prompting.config import PromptConfig

BackendFactory = Callable[["PromptConfig"], PromptBackend]
BACKENDS: Registry[BackendFactory] = Registry("prompting backend", field="model")


def _backend_class(module: str, name: str) -> type:
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if err.name != module:  # the module is there but a package it needs is not
            raise ConfigError(
                f"backend module {module} needs the package '{err.name}': pip install it"
            ) from err
        raise ConfigError(f"backend {module}.{name} is not available in this mtpeft ({err})") from err


def _local(config: PromptConfig) -> PromptBackend:
    cls = _backend_class("mtpeft.prompting.backends.local", "LocalBackend")
    return cls(
        config.model,
        context_length=config.context_length,
        batch_size=config.batch_size,
        embed_max_tokens=config.embed_max_tokens,
        seed=config.seed,
    )


def _openai(config: PromptConfig) -> PromptBackend:
    from mtpeft.prompting.config import OPENAI_PREFIX

    cls = _backend_class("mtpeft.prompting.backends.openai_compat", "OpenAIBackend")
    # Only what the config sets: the backend's own defaults stand for the rest.
    settings = {
        "api_key_env": config.api_key_env, "concurrency": config.concurrency,
        "max_retries": config.max_retries, "context_length": config.context_length,
    }  # fmt: skip
    options = {k: v for k, v in settings.items() if v is not None}
    return cls(config.model.removeprefix(OPENAI_PREFIX), config.model_name or "", **options)


BACKENDS.register("local", _local)
BACKENDS.register("openai", _openai)


def backend_kind(model: str) -> str:
    from mtpeft.prompting.config import OPENAI_PREFIX

    return "openai" if model.startswith(OPENAI_PREFIX) else "local"


def make_backend(config: PromptConfig) -> PromptBackend:
    """The backend the config's model string names, built with the config's settings."""
    return BACKENDS[backend_kind(config.model)](config)


__all__ = [
    "BACKENDS",
    "Answer",
    "Message",
    "Prompt",
    "PromptBackend",
    "ScoringBackend",
    "backend_kind",
    "make_backend",
]
