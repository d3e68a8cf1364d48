"""Reading YAML config files (task, train, study) into pydantic models, with errors that name the place.

One definition, so every config kind reports a missing file, bad YAML or a bad field the same way: as a
ConfigError naming the file (and the field), never a traceback. What a config may hold is plain data
(mappings, lists, text, finite numbers, booleans, null); YAML's other types (dates, binary, sets,
Python objects) and self-referencing or gigantic documents are refused before pydantic sees them.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from mtpeft.errors import ConfigError, shorten

Model = TypeVar("Model", bound=BaseModel)

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # configs are hand-written; anything larger is the wrong file
MAX_NODES = 100_000  # values after YAML aliases are expanded (an alias bomb is small on disk)
MAX_DEPTH = 64
MAX_INT = 2**63 - 1  # what SQLite, numpy and torch hold; larger is a typo, not a setting
_PLAIN_SCALARS = (str, bool, int, float, type(None))
# libyaml's loader where installed: 10x faster, and it caps nesting depth itself (same safe constructor).
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key written twice in one mapping (at any depth).

    PyYAML keeps the last value silently: `max_steps: 2` then `max_steps: 100000` trained 100,000 steps.
    Keys brought in by a merge (`<<: *base`) may still be overridden: only keys written in the mapping
    itself are compared.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicate_keys(loader: Any, node: yaml.MappingNode) -> None:
    first_line: dict[Any, int] = {}  # key -> the line it was first written on
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: the constructor itself refuses it next
            continue
        if seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {shorten(key, 60)} appears twice in one mapping (first at line {first_line[key]}); "
                "YAML would silently keep the last value: keep one",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line + 1


_LOADER = _UniqueKeyLoader
# Byte-order marks of encodings YAML allows but mtpeft does not read: say so rather than show mojibake.
_FOREIGN_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def read_yaml_mapping(path: str | Path, *, what: str, expected: str) -> dict[str, Any]:
    """The YAML mapping in `path`; `what` names the file kind, `expected` lists its top-level fields."""
    path = Path(path)
    data = parse_yaml(_read_text(path, what), where=path, what=what)
    if data is None:
        raise ConfigError(f"the {what} is empty; it needs a mapping of fields ({expected})", path=path)
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"a {what} must be a mapping of fields ({expected}), not a {kind}", path=path)
    return data


def _read_text(path: Path, what: str) -> str:
    """The file's text, refusing (with the reason) what is not a readable UTF-8 text file."""
    try:
        info = path.stat()  # before open(): opening a FIFO would block, a device could stream forever
    except FileNotFoundError as err:
        raise ConfigError(f"{what} not found", path=path) from err
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read the {what}: {_os_reason(err)}", path=path) from err
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"is a folder; give the path of the {what} (a .yaml file) inside it", path=path)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"is not a regular file; give the path of a {what}", path=path)
    if info.st_size > MAX_CONFIG_BYTES:
        size = f"{info.st_size:,} bytes"
        raise ConfigError(f"is {size}, too large for a {what}: is it the right file?", path=path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the {what}: {_os_reason(err)}", path=path) from err
    return _decode(raw, path, what)


def _decode(raw: bytes, path: Path, what: str) -> str:
    for bom, encoding in _FOREIGN_BOMS.items():
        if raw.startswith(bom):
            raise ConfigError(f"is {encoding} text; save the {what} as UTF-8", path=path)
    if b"\x00" in raw:
        raise ConfigError(f"holds NUL bytes: it is a binary file, not a YAML {what}", path=path)
    try:
        return raw.decode("utf-8-sig")  # -sig: a UTF-8 byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"is not UTF-8 text (byte 0x{raw[err.start]:02x} at line {line}); save the {what} as UTF-8",
            path=path,
        ) from err


def _os_reason(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def parse_yaml(text: str, *, where: str | Path | None, what: str = "config", field: str | None = None) -> Any:
    """Plain data from YAML text; any parse failure, and any non-plain value, is a ConfigError."""
    data = load_yaml_text(text, where=where, what=what, field=field)
    check_plain(data, path=where, field=field)
    return data


def load_yaml_text(
    text: str, *, where: str | Path | None, what: str = "config", field: str | None = None
) -> Any:
    """Whatever PyYAML's safe loader makes of `text`; any failure to parse is a ConfigError."""
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (C or Python)
    except yaml.MarkedYAMLError as err:
        problem = f"not valid YAML {_yaml_place(err)}: {err.problem}"
        raise ConfigError(problem, path=where, field=field) from err
    except RecursionError as err:
        raise ConfigError(f"the {what} is nested too deeply", path=where, field=field) from err
    except Exception as err:  # noqa: BLE001 - PyYAML's constructors raise ValueError, AttributeError, ...
        # on malformed scalars (`2020-13-45`, `!!int x`, `!!timestamp x`): all are this text's problem.
        raise ConfigError(f"not valid YAML: {err}", path=where, field=field) from err


def _yaml_place(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    return f"at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def check_plain(data: Any, *, path: str | Path | None, field: str | None = None) -> None:
    """Refuse what no config field can mean: non-plain YAML types, inf/NaN, ints beyond 64 bits,
    and documents too deep or too large (which is also how a self-referencing alias shows up)."""
    budget = [MAX_NODES]
    _check_node(data, [field] if field else [], budget, path)


def _check_node(value: Any, loc: list[str], budget: list[int], path: str | Path | None) -> None:
    budget[0] -= 1
    where = ".".join(loc) or None
    if budget[0] < 0 or len(loc) > MAX_DEPTH:
        raise ConfigError(
            "the document is too large or too deeply nested (or an alias refers to itself)",
            path=path,
            field=where,
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_scalar(key, loc, path)
            _check_node(item, [*loc, str(key)], budget, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_node(item, [*loc, str(index)], budget, path)
    else:
        _check_scalar(value, loc, path)


def _check_scalar(value: Any, loc: list[str], path: str | Path | None) -> None:
    where = ".".join(loc) or None
    if not isinstance(value, _PLAIN_SCALARS):
        raise ConfigError(
            f"a YAML {type(value).__name__} value ({_short(value)}) is not allowed in a config; write "
            "plain text (quote dates and tagged values), numbers, booleans, lists or mappings",
            path=path,
            field=where,
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value}", path=path, field=where)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(
            f"the number {_short(value)} is out of range (at most {MAX_INT})", path=path, field=where
        )


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expand_workspace(workspace: str) -> str:
    """The workspace folder as every later step uses it: `~` expanded here, once (a `~/ws` that reached
    mkdir unexpanded made a folder named `~` while the run's config.yaml named the home folder); blank
    text is refused (it would silently mean the current folder)."""
    if not workspace.strip():
        raise ValueError("the workspace is empty: give a folder, e.g. workspace or ~/mtpeft-workspace")
    return os.path.expanduser(workspace)


# A `workspace:` field of any config kind (train, study, prompt).
Workspace = Annotated[str, AfterValidator(expand_workspace)]


def validate_model(model: type[Model], data: dict[str, Any], *, path: str | Path | None = None) -> Model:
    """`model` validated from `data`; the first error becomes a ConfigError naming its dotted field."""
    check_plain(data, path=path)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ConfigError(first["msg"], path=path, field=field) from err


def located(err: ConfigError, path: str | Path | None, *, field: str | None = None) -> ConfigError:
    """`err` as seen from the config file `path` (and its `field`).

    An error that names no file gets `path`; one that names another file (a task YAML the config points
    at) keeps that file in its message and is reported at `field` of `path`, so both places show.
    """
    if path is None or (err.path is not None and os.path.abspath(err.path) == os.path.abspath(path)):
        return err
    if err.path is None:
        return ConfigError(err.reason, path=path, field=field or err.field)
    return ConfigError(str(err), path=path, field=field)
