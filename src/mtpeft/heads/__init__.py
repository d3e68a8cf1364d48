"""Per-task heads: tiny modules on top of the shared backbone. A head knows only the hidden size."""

from mtpeft.heads.base import HEADS, TaskHead, build_head

__all__ = ["HEADS", "TaskHead", "build_head"]
