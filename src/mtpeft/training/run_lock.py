"""One trainer per run: an exclusive lock beside each run directory, held for the whole run.

Two processes training the same config in one workspace would share one run directory: they clash
on the checkpoint renames, and each marks the store row its own way. The lock is an OS file lock
(`filelock`, flock on POSIX): the kernel drops it when the holder dies, even by SIGKILL, so a killed
trainer never leaves a stale lock behind. It sits BESIDE the run directory (`runs/NAME.lock`),
not in it, because a fresh run deletes and recreates its directory. The holder writes its pid into
`runs/NAME.lock.owner` so the process that is turned away can say who holds the run.

flock is reliable on local disks; on network file systems (a Ray cluster's shared workspace) it
depends on the server, so there the lock is best effort.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mtpeft.errors import RunLocked

_OWNER_WAIT_S = 1.0  # the holder writes its pid just after locking; a loser may look in between


def lock_paths(run_dir: Path) -> tuple[Path, Path]:
    """(lock file, owner side file) of a run directory."""
    return run_dir.with_name(run_dir.name + ".lock"), run_dir.with_name(run_dir.name + ".lock.owner")


def _owner(owner_file: Path) -> str:
    deadline = time.monotonic() + _OWNER_WAIT_S
    while True:
        try:
            owner = json.loads(owner_file.read_text(encoding="utf-8"))
            return f"process {owner['pid']} on {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "another process (its pid is not recorded yet)"
            time.sleep(0.05)


@contextmanager
def run_lock(run_dir: Path, name: str) -> Iterator[None]:
    """Hold the run's lock for the block, or raise RunLocked at once if another process holds it.

    Taken before the run's directory or store row is touched, so the process turned away changes
    nothing of the run that is being trained.
    """
    lock_file, owner_file = lock_paths(run_dir)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(
            f"run {name} is already being trained by {_owner(owner_file)} (lock {lock_file}); "
            "wait for it or stop it"
        ) from None
    try:
        owner_file.write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}), encoding="utf-8")
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()
