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
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from mtpeft.errors import InputError


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether `a` and `b` name one file (links, `..`, hard links); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting_inputs(
    out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], *, option: str = "--out"
) -> None:
    """Refuse an output that is one of the inputs, before either is opened."""
    for source in inputs:
        if same_file(out, source):
            raise InputError(
                f"{option} {os.fsdecode(out)!r} is the input {os.fsdecode(source)!r}: writing it would "
                "destroy the input before it is read. Write to another file, then move it"
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
    exactly as it was. The file keeps the permissions a plain `open(path, "w")` would have given it.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{os.fsdecode(target)!r} is a folder; give a file name to write")
    folder = target.parent
    binary = "b" in mode
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name[:80]}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        _match_permissions(fd, target)
        with os.fdopen(fd, mode, **({} if binary else {"encoding": encoding, "newline": newline})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """`Path.write_text`, without ever leaving `path` half-written."""
    with atomic_output(path) as stream:
        stream.write(text)


def _match_permissions(fd: int, target: Path) -> None:
    # mkstemp makes 0600 files; an output file should get what `open()` gives (0666 less the umask),
    # or keep the mode of the file it replaces.
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):
        os.fchmod(fd, mode)
