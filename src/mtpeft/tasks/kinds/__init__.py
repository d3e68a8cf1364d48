"""Task kinds, one module each, registered by name in KINDS.

Adding a kind: a module here defining a `Kind` instance (roles, encoded inputs, head, scoring,
prediction rows, baselines), plus its name in the import line and one `register_kind(...)` line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtpeft.registry import Registry
from mtpeft.tasks.kinds import classification, generation, pair, retrieval
from mtpeft.tasks.kinds.base import Kind, TaskEvaluation

if TYPE_CHECKING:
    from mtpeft.tasks.spec import TaskSpec

KINDS: Registry[Kind] = Registry("task kind", base=Kind, field="kind")


def register_kind(kind: Kind) -> Kind:
    return KINDS.register(kind.name, kind)


register_kind(classification.BINARY)
register_kind(classification.MULTICLASS)
register_kind(pair.PAIR)
register_kind(retrieval.RETRIEVAL)
register_kind(generation.GENERATION)


def kind_of(task: TaskSpec) -> Kind:
    return KINDS[task.kind]


__all__ = ["KINDS", "Kind", "TaskEvaluation", "kind_of", "register_kind"]
