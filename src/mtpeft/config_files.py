"""Reading YAML config files (task, train, study) into pydantic models, with errors that name the place.

One definition, so every config kind reports a missing file, bad YAML or a bad field the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mtpeft.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def read_yaml_mapping(path: str | Path, *, what: str, expected: str) -> dict[str, Any]:
    """The YAML mapping in `path`; `what` names the file kind, `expected` lists its top-level fields."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"{what} not found", path=path) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"not valid YAML{line}: {err}", path=path) from err
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} must be a mapping of fields ({expected})", path=path)
    return data


def validate_model(model: type[Model], data: dict[str, Any], *, path: str | Path | None = None) -> Model:
    """`model` validated from `data`; the first error becomes a ConfigError naming its dotted field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ConfigError(first["msg"], path=path, field=field) from err
