"""The format-reader contract and its registry (one module per published format)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mtpeft.data.example import Example
from mtpeft.errors import ConfigError, DataError, shorten, shorten_list
from mtpeft.tasks.spec import TaskSpec


class FormatReader(Protocol):
    name: str
    description: str

    def splits(self, root: Path) -> list[str]:
        """Split names present under `root` (e.g. train, valid, test)."""

    def read(self, root: Path, split: str, task: TaskSpec) -> list[Example]:
        """All examples of one split; raise DataError naming file, line and field on bad input."""


FORMATS: dict[str, FormatReader] = {}


def register_format(reader_cls: Callable[[], FormatReader]) -> Callable[[], FormatReader]:
    reader = reader_cls()
    FORMATS[reader.name] = reader
    return reader_cls


def get_format(name: str) -> FormatReader:
    from mtpeft.data import formats  # noqa: F401  (importing the package registers every reader)

    if name not in FORMATS:
        raise ConfigError(
            f"unknown data format {shorten(name, 60)}; known formats: {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[name]


def resolve_root(task: TaskSpec, root: str | Path | None) -> Path:
    path = Path(root) if root is not None else (Path(task.data) if task.data else None)
    if path is None:
        raise ConfigError(f"task {shorten(task.name, 60)} has no data folder; pass one (e.g. --data PATH)")
    if not path.exists():
        raise DataError("data folder does not exist", path=path, hint="check the path")
    return path


def load_split(task: TaskSpec, root: str | Path | None, split: str) -> list[Example]:
    """Examples of one split of a task's data, validated; the entry point everything else uses."""
    path = resolve_root(task, root)
    reader = get_format(task.format)
    present = reader.splits(path)
    if split not in present:
        raise DataError(
            f"split {shorten(split, 40)} is missing (found: {shorten_list(present, quoted=False) or 'none'})",
            path=path,
            hint=f"the {reader.name} format expects files like: {reader.description}",
        )
    examples = reader.read(path, split, task)
    if not examples:
        raise DataError(f"split {shorten(split, 40)} is empty", path=path)
    return examples


def available_splits(task: TaskSpec, root: str | Path | None) -> list[str]:
    return get_format(task.format).splits(resolve_root(task, root))


def require_splits(task: TaskSpec, root: str | Path | None) -> list[str]:
    """The splits under `root`, or a DataError naming the folder and the file names the format reads
    (a folder with none is the wrong folder, not an empty dataset)."""
    splits = available_splits(task, root)
    if not splits:
        reader = get_format(task.format)
        raise DataError(
            f"no split file found for task {shorten(task.name, 40)} (format {reader.name})",
            path=resolve_root(task, root),
            hint=f"the {reader.name} format expects files like: {reader.description}; <split> is train, "
            "valid or test",
        )
    return splits
