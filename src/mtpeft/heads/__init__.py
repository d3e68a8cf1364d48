"""Per-task heads: tiny modules on pooled backbone vectors. A head knows only the hidden size."""

from mtpeft.heads.base import TaskHead, Vectors, build_head

__all__ = ["TaskHead", "Vectors", "build_head"]
