"""Every output file a command writes goes through here (torch-free).

Two promises to the user, for every command that takes `--out` or writes a report, index or
prediction file:
- the file named is never truncated before the new content is complete: it is written beside the
  target under a hidden temporary name and renamed over it at the end (a crash, a full disk or a
  Ctrl-C leaves the old file as it was and no half-written one);
- an output that is one of the command's inputs (same file by any spelling, link or hard link) is
  refused before anything is opened, so `predict in.jsonl --out in.jsonl` cannot empty its input.

Written by hand: the standard library has the pieces (`tempfile`, `os.replace`, `os.path.samefile`)
but not this rule; `atomicwrites` is unmaintained.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from mtpeft.errors import InputError

# A write that fails for lack of room: the user's fix is space, not a bug report.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


PathOrFd = str | os.PathLike[str] | int  # an int is an open file descriptor (stdin redirected from a file)


def same_file(a: PathOrFd, b: PathOrFd) -> bool:
    """Whether `a` and `b` name one file (links, `..`, hard links); False when either does not exist."""
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except (OSError, ValueError):  # ValueError: a NUL in a path
        return False


def refuse_overwriting_inputs(
    out: str | os.PathLike[str],
    inputs: Iterable[PathOrFd],
    *,
    option: str = "--out",
    names: Iterable[str] | None = None,
) -> None:
    """Refuse an output that is one of the inputs, before either is opened.

    `names`, one per input, is how the message calls it (default: the input's path).
    """
    if _is_stream(Path(out)):
        return  # a terminal or a pipe is not emptied by writing: `--out /dev/stdout` with stdin a tty
    inputs = list(inputs)
    shown = list(names) if names is not None else [_shown(source) for source in inputs]
    for source, name in zip(inputs, shown, strict=True):
        if same_file(out, source):
            raise InputError(
                f"{option} {os.fsdecode(out)!r} is the input {name!r}: writing it would "
                "destroy the input before it is read. Write to another file, then move it"
            )


def _shown(source: PathOrFd) -> str:
    return f"file descriptor {source}" if isinstance(source, int) else os.fsdecode(source)


def check_output(path: str | os.PathLike[str], *, option: str = "--out") -> None:
    """Refuse, before any work is done, an output that could not be written: a folder, or a file in a
    folder that does not exist. (Commands call this early so a typo fails before a model loads.)"""
    target = Path(path)
    if "\0" in os.fsdecode(target):
        raise InputError(f"{option} {os.fsdecode(target)!r}: a file name cannot hold a NUL character")
    if target.is_dir():
        raise InputError(f"{option} {os.fsdecode(target)!r} is a folder; give a file name to write")
    folder = _real(target).parent
    if not folder.is_dir():
        raise InputError(
            f"{option} {os.fsdecode(target)!r}: the folder {os.fsdecode(folder)!r} does not exist; "
            "create it first"
        )


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    mode: str = "w",
    encoding: str | None = "utf-8",
    newline: str | None = "\n",
) -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path` in one rename.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `path` is left
    exactly as it was. The file keeps the permissions a plain `open(path, "w")` would have given it
    (or those of the file it replaces). A symbolic link is written through (its target is replaced,
    the link stays); a hard-linked file is replaced under this name only. A FIFO or a device
    (`/dev/stdout`, `/dev/null`) is not a file that can be half-written: it is written directly.
    """
    check_output(path)
    target = _real(Path(path))
    opening = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    if _is_stream(target):
        with open(target, mode, **opening) as stream:  # noqa: PTH123 - a device, not a file to replace
            yield stream
        return
    fd, tmp = _temporary_beside(path, target)
    try:
        _match_permissions(fd, target)
        with os.fdopen(fd, mode, **opening) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in _NO_ROOM:
            raise InputError(
                f"{os.fsdecode(path)!r}: no space left on the device to write it ({err.strerror}); "
                "the file was left as it was. Free some space and run the command again"
            ) from None
        raise
    _sync_folder(target.parent)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """`Path.write_text`, without ever leaving `path` half-written."""
    with atomic_output(path) as stream:
        stream.write(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """`Path.write_bytes`, without ever leaving `path` half-written."""
    with atomic_output(path, mode="wb") as stream:
        stream.write(data)


def _real(path: Path) -> Path:
    # Through symbolic links, so that replacing the file keeps the user's link (and a link into
    # another folder gets its temporary file on the right file system for the rename).
    return Path(os.path.realpath(path))


def _is_stream(target: Path) -> bool:
    try:
        return not stat.S_ISREG(target.stat().st_mode)
    except OSError:
        return False  # does not exist yet: a new regular file


def _temporary_beside(shown: str | os.PathLike[str], target: Path) -> tuple[int, Path]:
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name[:80]}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise InputError(
            f"{os.fsdecode(shown)!r}: cannot write in {os.fsdecode(target.parent)!r} ({err.strerror})"
        ) from None
    return fd, Path(name)


def _match_permissions(fd: int, target: Path) -> None:
    # mkstemp makes 0600 files; an output file should get what `open()` gives (0666 less the umask),
    # or keep the mode (and, where we may, the owner) of the file it replaces.
    try:
        info = target.stat()
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666 & ~umask)
        return
    with contextlib.suppress(OSError):
        os.fchown(fd, info.st_uid, info.st_gid)  # only root may give a file away; others keep their own
    with contextlib.suppress(OSError):
        os.fchmod(fd, info.st_mode & 0o7777)


def _sync_folder(folder: Path) -> None:
    # The rename is only durable once the folder's entry is on disk (a power cut could otherwise
    # bring back the old file); best effort: some file systems refuse to open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
