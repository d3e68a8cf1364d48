"""File manifests: every file of a saved directory with its size and sha256, written last.

Used by training checkpoints (`checkpoints/step-N/`) and by the deployable (`best/`). A directory is
written under a temporary name, its manifest is written last, then the directory is renamed into
place; reading it back first checks every file against the manifest, so a truncated, emptied,
deleted or bit-flipped file is named instead of surfacing as a traceback from safetensors, pickle or
torch (or, worse, loading without complaint and silently changing the results).

Stdlib only (no torch), so the trainer, `mtpeft evaluate` and torch-free tools share one module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST_FILE = "MANIFEST.json"
_FORMAT = 1
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(directory: Path) -> None:
    """Record every file under `directory` (size, sha256); call it after the last file is written.

    The manifest goes to a temporary name first and is renamed, so it is either complete or absent.
    """
    files = {
        p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _files(directory)
    }
    tmp = directory / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": _FORMAT, "files": files}, indent=1), encoding="utf-8")
    os.replace(tmp, directory / MANIFEST_FILE)


def _load(directory: Path) -> dict[str, dict] | str:
    """The manifest's file table, or why it cannot be read."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return f"{MANIFEST_FILE}: missing (written incompletely, or by an mtpeft that wrote none)"
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and {"size", "sha256"} <= set(v) for v in files.values()
        ):
            raise ValueError("unexpected layout")
    except (
        ValueError,
        KeyError,
        TypeError,
        UnicodeDecodeError,
        RecursionError,
    ) as err:  # RecursionError: deeply nested JSON
        return f"{MANIFEST_FILE}: unreadable ({err})"
    return files


def manifest_problem(directory: Path) -> str | None:
    """None if every file the manifest lists is present, of its size and checksum; else the first
    problem found, as `FILE: what is wrong` (sizes are checked before any file is hashed)."""
    files = _load(directory)
    if isinstance(files, str):
        return files
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name}: missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{name}: size {size} != {entry['size']}"
    for name, entry in files.items():
        if _sha256(directory / name) != entry["sha256"]:
            return f"{name}: checksum mismatch"
    return None


def has_manifest(directory: Path) -> bool:
    """Whether the directory was completed (its manifest is written last); no file is checked."""
    return (directory / MANIFEST_FILE).is_file()
