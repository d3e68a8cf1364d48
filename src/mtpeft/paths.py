"""Names from configs and task files become file names here, and only here (torch-free).

A run or task name is free text to the user (`vuln/chrome`, `../x`, `[bold]`, 300 characters of
anything). `safe_filename` turns it into one portable path component that cannot climb out of the
folder it is joined to; `inside` is the guard at the places that write, so that a future caller that
forgets the first still cannot write outside the workspace.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mtpeft.errors import ConfigError

MAX_STEM = 100  # characters; room is left for suffixes (".predictions.jsonl", "-<run key>") under 255
_HASH_CHARS = 8
# Portable on Linux, macOS and Windows, and harmless in a shell. `+` joins task groups in study names.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
# Windows refuses these as a file's stem whatever the extension (`con.txt` too), in any case.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)


def _digest(name: str) -> str:
    # surrogatepass: a str decoded from JSON may hold lone surrogates; they must hash, not raise.
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def safe_filename(name: str) -> str:
    """One safe path component for `name`: the name itself when it already is one, else a readable stem
    plus a short hash of the name, so that two different names never share a file.

    Safe means: only ASCII letters, digits and `_ . + -`; not starting with a dot (`.`, `..`, hidden
    files) or a dash (read as an option by shell tools), no trailing dot (Windows drops it), not a
    reserved device name, not empty, at most MAX_STEM characters.
    """
    stem = _UNSAFE.sub("-", name).lstrip(".-").rstrip(".")
    if stem == name and name and len(name) <= MAX_STEM and not _reserved(name):
        return name
    stem = stem[: MAX_STEM - _HASH_CHARS - 2].rstrip(".") or "unnamed"
    if _reserved(stem):  # `nul.txt-<hash>` is still `nul` to Windows
        stem = f"_{stem}"
    return f"{stem}-{_digest(name)}"


def _reserved(stem: str) -> bool:
    return stem.split(".", 1)[0].lower() in _RESERVED


def inside(base: str | Path, path: str | Path) -> Path:
    """`path`, after checking that it resolves (links and `..` followed) to a place under `base`."""
    root = Path(base).resolve()
    target = Path(path).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(
            f"refusing to write {str(path)!r}: it resolves to {str(target)!r}, outside {str(root)!r}. "
            "A run or task name must not place files outside the workspace; rename it"
        )
    return Path(path)


def task_file(out_dir: str | Path, task_name: str, suffix: str) -> Path:
    """`out_dir/<task>.<suffix>` (prediction, answer and per-example files of one task)."""
    return inside(out_dir, Path(out_dir) / f"{safe_filename(task_name)}.{suffix}")
