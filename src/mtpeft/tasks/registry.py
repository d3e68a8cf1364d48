"""Task registry: built-in task YAMLs plus any YAML file the user points at."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from mtpeft.errors import ConfigError
from mtpeft.tasks.spec import TaskSpec, load_task_yaml

BUILTIN_DIR = Path(__file__).parent / "builtin"


@cache
def builtin_tasks() -> dict[str, TaskSpec]:
    tasks = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        spec = load_task_yaml(path)
        tasks[spec.name] = spec
    return tasks


def get_task(name_or_path: str | Path) -> TaskSpec:
    """A built-in task by name, or a user task from a YAML path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_task_yaml(text)
    tasks = builtin_tasks()
    if text not in tasks:
        raise ConfigError(
            f"unknown task '{text}'; built-in tasks: {', '.join(sorted(tasks))}; "
            "or give the path of a task YAML file"
        )
    return tasks[text]
