"""Task registry: built-in task YAMLs plus any YAML file the user points at.

A task reference is a built-in name or, when it ends in `.yaml`/`.yml`, the path of a task YAML; nothing
else is read from disk. (Looking names up as files first made `task: vulnerability` load a stray file of
that name from the current folder, and `task: /etc/passwd` read that file as YAML.)
"""

from __future__ import annotations

import os
from functools import cache, lru_cache
from pathlib import Path

from mtpeft.errors import ConfigError, MtpeftError, shorten
from mtpeft.tasks.spec import TaskSpec, load_task_yaml

BUILTIN_DIR = Path(__file__).parent / "builtin"
TASK_FILE_SUFFIXES = (".yaml", ".yml")


@cache
def builtin_tasks() -> dict[str, TaskSpec]:
    tasks = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        spec = load_task_yaml(path)
        tasks[spec.name] = spec
    return tasks


def is_task_file(name_or_path: str | Path) -> bool:
    return str(name_or_path).lower().endswith(TASK_FILE_SUFFIXES)


def get_task(name_or_path: str | Path) -> TaskSpec:
    """A built-in task by name, or a user task from a YAML path."""
    text = str(name_or_path)
    if is_task_file(text):
        return load_task_yaml(text)
    tasks = builtin_tasks()
    if text not in tasks:
        hint = "give the path of a task YAML file (ending in .yaml or .yml)"
        if _exists(text):
            hint = f"{shorten(text)} exists but a task file must end in .yaml or .yml"
        raise ConfigError(
            f"unknown task {shorten(text)}; built-in tasks: {', '.join(sorted(tasks))}; or {hint}"
        )
    return tasks[text]


def _exists(text: str) -> bool:
    try:
        return os.path.exists(text)
    except ValueError:  # a NUL byte
        return False


def task_label(name_or_path: str) -> str:
    """The name a task goes by in a run: a built-in's name, or the `name:` inside a task YAML.

    While the YAML cannot be read or is invalid, its file stem stands in; loading the task (the preflight
    does so before anything runs) then reports what is wrong with the file.
    """
    if not is_task_file(name_or_path):
        return name_or_path
    try:
        info = os.stat(name_or_path)
        return _yaml_task_name(os.path.abspath(name_or_path), info.st_mtime_ns, info.st_size)
    except (OSError, ValueError, MtpeftError):
        return Path(name_or_path).stem


@lru_cache(maxsize=256)
def _yaml_task_name(path: str, mtime_ns: int, size: int) -> str:
    """Cached by modification time and size: labels are asked for often, the file changes rarely."""
    return load_task_yaml(path).name
