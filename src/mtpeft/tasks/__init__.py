"""Task declarations: what to predict, from which fields, scored how."""

from mtpeft.tasks.registry import builtin_tasks, get_task
from mtpeft.tasks.spec import TaskKind, TaskSpec, load_task_yaml

__all__ = ["TaskKind", "TaskSpec", "builtin_tasks", "get_task", "load_task_yaml"]
