"""A code-search index on disk: vectors, the units they stand for, and the run that made them.

    DIR/manifest.json   written last: its presence marks a complete index
    DIR/vectors.npy     float32 [count, dim], unit length (the run's retrieval projection of each unit)
    DIR/units.jsonl     a line per row: {"path", "name", "kind", "language", "start_line", "end_line", "hash"}

The manifest names the run (run_id from run.json, the run directory, a sha256 of its best/ files), the
retrieval task whose vectors these are, the tree and the limits, and the sha256 of both data files, so a
damaged, partial or foreign index is refused with a message saying which, instead of ranking nonsense.
Torch-free: numpy and json only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtpeft import layout
from mtpeft.errors import DataError

FORMAT = "mtpeft.index/1"
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
UNITS = "units.jsonl"
INDEX_FILES = (MANIFEST, VECTORS, UNITS)  # all an index folder ever holds
_MANIFEST_LIMIT = 1 << 20  # ours are a few kB; a bigger file of that name is someone else's
UNIT_FIELDS = ("path", "name", "kind", "language", "start_line", "end_line", "hash")
_REBUILD = "rebuild it with `mtpeft index PATH --run RUN_DIR --out DIR`"


class SearchIndexError(DataError):
    """An index folder that cannot be used: missing, partial, damaged, or built by another run."""


class RunLike(Protocol):
    """A run as an index check sees it: `mtpeft.api.Run`, or RunRef.on_disk(...) without the model."""

    @property
    def run_id(self) -> str | None: ...

    @property
    def run_dir(self) -> Path: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class RunRef:
    run_id: str | None
    run_dir: Path
    fingerprint: str

    @classmethod
    def on_disk(cls, run_dir: str | Path) -> RunRef:
        """Read from the run directory alone (run.json, best/), so a check needs no model loaded; from
        an export folder, its export.json (checked against its manifest) as ExportedRun reads it."""
        from mtpeft.export.folder import is_export, read_export

        path = Path(run_dir).resolve()
        if is_export(path):
            meta = read_export(path).meta
            return cls(meta["source"].get("run_id"), path, str(meta["fingerprint"]))
        return cls(read_run_id(path), path, run_fingerprint(path))


@dataclass(frozen=True)
class Hit:
    """One search result: an indexed unit and its cosine similarity to the query."""

    rank: int  # 1 = best
    score: float
    path: str  # relative to the indexed root
    name: str
    kind: str
    language: str
    start_line: int
    end_line: int
    row: int  # row in the index

    @property
    def location(self) -> str:
        return f"{self.path}:{self.start_line}"


@dataclass
class SearchIndex:
    directory: Path
    manifest: dict[str, Any]
    vectors: np.ndarray
    units: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    @property
    def run_dir(self) -> Path:
        return Path(self.manifest["run"]["run_dir"])

    def __len__(self) -> int:
        return len(self.units)

    def check_run(self, run: RunLike) -> None:
        """Refuse vectors that another run (or another best/ of this run) made: they do not compare."""
        made = self.manifest["run"]
        if made.get("run_id") and run.run_id and made["run_id"] != run.run_id:
            raise SearchIndexError(
                f"this index was built with run {made['run_id']} ({made['run_dir']}), not with run "
                f"{run.run_id} ({run.run_dir}); its vectors only compare with that run's",
                path=self.directory,
                hint=f"search it with --run {made['run_dir']}, or {_REBUILD}",
            )
        if made["fingerprint"] != run.fingerprint:
            raise SearchIndexError(
                f"this index was built from other model files than {run.run_dir}/{layout.BEST_DIR} holds now "
                "(another run, or this run retrained or resumed since)",
                path=self.directory,
                hint=_REBUILD,
            )

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k rows per query vector by cosine similarity (both sides unit length), best first; ties keep
        index order. Brute force: one matrix product, exact."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        scores = queries @ self.vectors.T
        k = min(k, len(self.units))
        results = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = top[np.lexsort((top, -row[top]))]
            results.append([self._hit(rank, int(i), float(row[i])) for rank, i in enumerate(top, 1)])
        return results

    def _hit(self, rank: int, row: int, score: float) -> Hit:
        unit = self.units[row]
        return Hit(rank, score, **{name: unit[name] for name in UNIT_FIELDS if name != "hash"}, row=row)


# ---- writing ----------------------------------------------------------------------------------------
def read_run_id(run_dir: Path) -> str | None:
    """The store's id of the run (run.json); None for a run directory copied without it."""
    try:
        return str(json.loads((Path(run_dir) / layout.RUN_FILE).read_text(encoding="utf-8"))["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_fingerprint(run_dir: Path) -> str:
    """sha256 over the names and bytes of every file in the run's best/ (what a deployment loads)."""
    best = Path(run_dir) / layout.BEST_DIR
    digest = hashlib.sha256()
    for path in sorted(p for p in best.rglob("*") if p.is_file()):
        digest.update(path.relative_to(best).as_posix().encode() + b"\0")
        digest.update(_file_sha256(path).encode())
    return digest.hexdigest()


def write_index(
    directory: Path,
    manifest: dict[str, Any],
    vectors: np.ndarray,
    units: list[dict[str, Any]],
    *,
    source: Path | None = None,
) -> Path:
    """Write the index whole or not at all: into a scratch folder beside it, then swapped in.

    An existing index at `directory` is replaced; any other folder that is not empty is refused, never
    deleted (see check_target). A crash before the swap leaves the old index as it was. `source`, the
    tree indexed (default: the manifest's root), is never inside the folder replaced.
    """
    directory = _real(Path(directory))
    source = Path(source) if source is not None else Path(manifest["root"])
    check_target(directory, source)
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        _write_files(scratch, manifest, vectors, units)
        check_target(directory, source)  # again: the build took a while, and the folder may have changed
        _swap_in(scratch, directory)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)  # our own scratch folder: nothing of the user's in it
        raise
    return directory


def _write_files(
    scratch: Path, manifest: dict[str, Any], vectors: np.ndarray, units: list[dict[str, Any]]
) -> None:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    np.save(scratch / VECTORS, vectors)
    # ASCII escapes: a file name that is not UTF-8 reaches here as lone surrogates (os.fsdecode), which
    # \uXXXX keeps exactly (and loads back to the same name) where UTF-8 text could not hold them.
    (scratch / UNITS).write_text("".join(json.dumps(u) + "\n" for u in units), "utf-8")
    full = manifest | {
        "format": FORMAT,
        "count": len(units),
        "dim": int(vectors.shape[1]),
        "files": {name: _file_sha256(scratch / name) for name in (VECTORS, UNITS)},
    }
    (scratch / MANIFEST).write_text(json.dumps(full, indent=2), encoding="utf-8")  # last: marks it complete


def _swap_in(scratch: Path, directory: Path) -> None:
    """Rename the new index into place; the old one (checked to be only an index) goes after.

    The old folder is emptied by name (the index's own files, then rmdir), never with a recursive
    delete: if anything else appeared in it since the check, it stays, beside the new index.
    """
    if not directory.exists():
        scratch.rename(directory)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    old.rmdir()  # only its unique name is wanted
    directory.rename(old)
    try:
        scratch.rename(directory)
    except BaseException:
        old.rename(directory)  # put the old index back
        raise
    for name in INDEX_FILES:
        (old / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something not ours arrived meanwhile: keep it, in that folder
        old.rmdir()


def check_target(directory: Path, source: Path | None = None) -> None:
    """Refuse an --out that writing the index would destroy: a file, the source tree itself or a folder
    holding it, or a folder that is not provably an mtpeft index (ours: a manifest of our format and
    nothing but the index's own files). A path that does not exist or an empty folder is fine."""
    shown = Path(directory)
    directory = _real(shown)
    if source is not None:
        _check_not_over_source(shown, directory, _real(Path(source)))
    if directory.exists() and not directory.is_dir():
        raise SearchIndexError(
            "is a file; --out needs a folder for the index",
            path=shown,
            hint="choose a new or empty folder for --out",
        )
    if directory.is_dir():
        reason = _not_an_index(directory)
        if reason is not None:
            raise SearchIndexError(
                f"exists and is not an mtpeft index ({reason}); not overwriting it",
                path=shown,
                hint="choose a new or empty folder for --out, or move the folder away yourself",
            )


def _check_not_over_source(shown: Path, directory: Path, source: Path) -> None:
    if directory == source or directory in source.parents:
        raise SearchIndexError(
            f"holds the source being indexed ({source}): replacing it with the index would delete your code",
            path=shown,
            hint="choose a new folder for --out, e.g. beside the source tree or a new folder inside it",
        )


def _not_an_index(directory: Path) -> str | None:
    """Why `directory` is not an index we may replace; None when it is one (or is empty)."""
    entries = {entry.name: entry for entry in directory.iterdir()}
    if not entries:
        return None
    others = sorted(name for name in entries if name not in INDEX_FILES)
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return f"it holds {shown}, which an index never does"
    odd = [name for name, entry in entries.items() if not stat.S_ISREG(entry.lstat().st_mode)]
    if odd:
        return f"{', '.join(sorted(odd))} is not a plain file"
    if MANIFEST not in entries:
        return f"no {MANIFEST}"
    try:
        with entries[MANIFEST].open("rb") as stream:
            found = json.loads(stream.read(_MANIFEST_LIMIT + 1)).get("format")
    except (OSError, ValueError, AttributeError, RecursionError):  # unreadable, too big, not an object
        return f"its {MANIFEST} is not an index manifest"
    if found != FORMAT:
        return f"its {MANIFEST} is not an index manifest (format {found!r}, not {FORMAT!r})"
    return None


def _real(path: Path) -> Path:
    # The folder a link points to is the one replaced, and compared with the source tree.
    return Path(os.path.realpath(path))


# ---- reading ----------------------------------------------------------------------------------------
def load_index(directory: str | Path) -> SearchIndex:
    """Read and check an index folder; every problem is a SearchIndexError naming the file and what to do."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SearchIndexError("no such index folder", path=directory, hint=f"build one: {_REBUILD}")
    manifest = _read_manifest(directory)
    for name in (VECTORS, UNITS):
        _check_file(directory / name, manifest["files"].get(name))
    vectors = _read_vectors(directory / VECTORS, manifest)
    units = list(_read_units(directory / UNITS))
    if len(units) != manifest["count"]:
        raise SearchIndexError(
            f"holds {len(units)} units but manifest.json says {manifest['count']}",
            path=directory / UNITS,
            hint=_REBUILD,
        )
    return SearchIndex(directory, manifest, vectors, units)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise SearchIndexError(
            "is not a complete mtpeft index (no manifest.json: not an index, or its build was interrupted)",
            path=directory,
            hint=_REBUILD,
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise SearchIndexError(
            f"damaged, not valid JSON ({err})", path=path, line=line, hint=_REBUILD
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise SearchIndexError(
            f"format {found!r} is not {FORMAT!r} (another mtpeft version, or not an index)",
            path=path,
            hint=_REBUILD,
        )
    fields = {"task": str, "count": int, "dim": int, "root": str, "run": dict, "files": dict}
    for key, kind in fields.items():
        if not isinstance(manifest.get(key), kind):
            raise SearchIndexError(f"missing or not a {kind.__name__}", path=path, field=key, hint=_REBUILD)
    for key in ("run_dir", "fingerprint"):
        if not isinstance(manifest["run"].get(key), str):
            raise SearchIndexError("missing or not a str", path=path, field=f"run.{key}", hint=_REBUILD)
    return manifest


def _check_file(path: Path, expected: str | None) -> None:
    if not path.is_file():
        raise SearchIndexError("is missing: the index is incomplete", path=path, hint=_REBUILD)
    if expected is not None and _file_sha256(path) != expected:
        raise SearchIndexError(
            "does not match its sha256 in manifest.json: damaged or changed since the index was built",
            path=path,
            hint=_REBUILD,
        )


def _read_vectors(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise SearchIndexError(f"cannot be read as a numpy array ({err})", path=path, hint=_REBUILD) from None
    shape = (manifest["count"], manifest["dim"])
    if vectors.dtype != np.float32 or vectors.shape != shape:
        raise SearchIndexError(
            f"holds {vectors.dtype} {vectors.shape}, manifest.json says float32 {shape}",
            path=path,
            hint=_REBUILD,
        )
    if not np.isfinite(vectors).all():
        raise SearchIndexError("holds non-finite values (NaN or inf)", path=path, hint=_REBUILD)
    return vectors


def _read_units(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SearchIndexError(f"not UTF-8 text ({err.reason})", path=path, hint=_REBUILD) from None
    # split("\n"), not splitlines(): code names may hold U+2028, which json.dumps leaves as is.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # after the last newline
    for number, line in enumerate(lines, 1):
        try:
            unit = json.loads(line)
        except json.JSONDecodeError as err:
            raise SearchIndexError(f"not JSON ({err.msg})", path=path, line=number, hint=_REBUILD) from None
        missing = [name for name in UNIT_FIELDS if not isinstance(unit, dict) or name not in unit]
        if missing:
            raise SearchIndexError(
                f"a unit without {', '.join(missing)}", path=path, line=number, hint=_REBUILD
            )
        yield unit


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
