"""A full disk, recognised however the writer reports it, and said as one message with the space needed.

torch.save writes through a C++ stream that reports ENOSPC as `RuntimeError: basic_ios::clear` (or
"PytorchStreamWriter failed writing file"), safetensors and plain Python writes as `OSError(ENOSPC)`,
SQLite as "database or disk is full". Each is the same event to a user: free space, then resume.

Stdlib only, so the store and torch-free commands share it.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from mtpeft.errors import DiskFull

_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How torch's and SQLite's writers word a failed write; none of them carries an errno.
_NO_SPACE_WORDS = (
    "basic_ios::clear",
    "failed writing file",
    "file write failed",
    "no space left on device",
    "database or disk is full",
    "disk quota exceeded",
)
_MB = 1 << 20


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or an error it was raised from) is a write that failed for want of space."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        # Any type: safetensors raises its own SafetensorError("... No space left on device (os error 28)").
        if any(words in str(current).lower() for words in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_bytes(path: Path) -> int | None:
    """Free space on the disk holding `path` (its nearest existing parent); None if it cannot be read."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 if it is missing)."""
    try:
        return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    except OSError:
        return 0


def megabytes(size: int) -> str:
    return f"{max(size, 0) / _MB:,.1f} MB"


def disk_full(what: str, where: Path, *, needed: int | None, then: str) -> DiskFull:
    """One message: what could not be written where, the space it needs and has, and what to do."""
    free = free_bytes(where)
    have = f"{megabytes(free)} free" if free is not None else "free space unknown"
    need = f"about {megabytes(needed)} needed, " if needed else ""
    short = needed - (free or 0) if needed else 0
    todo = f"free at least {megabytes(short)}" if short > 0 else "free space"
    return DiskFull(
        f"the disk is full: {what} could not be written in {where} ({need}{have}); nothing half-written "
        f"was kept. {todo} on that disk (or choose another --workspace), then {then}"
    )
