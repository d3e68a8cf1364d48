"""Which task the backbone is running for, for methods whose module differs per task (MTL-LoRA).

A context, not an argument: the task reaches every adapted layer without changing any forward signature
(transformers', peft's or ours). `MultiTaskModel` runs each task's loss and predictions inside
`task_context(task)`; a task-conditioned layer reads `current_task()`. A ContextVar, so threads and
asyncio tasks each see their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch import nn

_CURRENT_TASK: ContextVar[str | None] = ContextVar("mtpeft_current_task", default=None)


@contextmanager
def task_context(task: str | None) -> Iterator[None]:
    """Run the backbone for `task` inside the block (None: no task, e.g. a task-independent method)."""
    token = _CURRENT_TASK.set(task)
    try:
        yield
    finally:
        _CURRENT_TASK.reset(token)


def current_task() -> str | None:
    return _CURRENT_TASK.get()


def is_task_conditioned(module: nn.Module) -> bool:
    """Whether `module` holds a layer whose output depends on the current task (then one backbone pass
    cannot serve several tasks)."""
    return any(getattr(m, "task_conditioned", False) for m in module.modules())
