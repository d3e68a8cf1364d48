"""Build a code-search index: the scanner's units of a tree, embedded by a run's retrieval head."""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtpeft.errors import InputError
from mtpeft.index.store import SearchIndex, check_target, load_index, write_index
from mtpeft.scan.extract import ExtractOptions, extract_tree
from mtpeft.scan.units import CodeUnit, SkippedFile

if TYPE_CHECKING:
    from mtpeft.api import Run

EMBED_CHUNK = 256  # units per embed call: one progress step, and a bound on tokenised text held at once


@dataclass
class IndexBuild:
    index: SearchIndex
    files: int  # source files read
    skipped: list[SkippedFile]
    truncated: int  # units longer than the code limit
    max_tokens: int
    seconds: float


def build_index(
    run: Run,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    task: str | None = None,
    exclude: Sequence[str] = (),
    use_default_excludes: bool = True,
    languages: Collection[str] | None = None,
    max_tokens: int | None = None,
    progress: bool = True,
) -> IndexBuild:
    """Extract every function, method and test under `root`, embed it with the run's retrieval task
    (`task`, or its first), and write the index to `out` (see index/store.py)."""
    started = time.perf_counter()
    check_target(Path(out), Path(root))  # before the work: never replace the user's folder or sources
    if not run.retrieval_tasks:
        raise InputError(
            f"run {run.run_dir} has no retrieval task (kind retrieval, e.g. code-search), so it has no "
            "query/code vectors to search with; train one with a retrieval task"
        )
    name = run.embedding_task(task)
    assert name is not None
    limit = max_tokens or run.tasks[name].max_length
    options = ExtractOptions(exclude=exclude, use_default_excludes=use_default_excludes, languages=languages)
    extraction = extract_tree(root, options, progress=progress)
    units = extraction.units
    if not units:
        raise InputError(
            f"{root}: no function, method or test found to index ({extraction.files} source files read, "
            f"{len(extraction.skipped)} skipped)"
        )
    vectors = _embed(run, name, [u.code for u in units], max_tokens, progress)
    truncated = sum(1 for n in run.count_tokens([u.code for u in units]) if n > limit)
    manifest: dict[str, Any] = {
        "run": {"run_id": run.run_id, "run_dir": str(run.run_dir), "fingerprint": run.fingerprint},
        "task": name,
        "model": run.info["model"],
        "root": str(extraction.root),
        "max_tokens": limit,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files_read": extraction.files,
        "files_skipped": len(extraction.skipped),
        "truncated": truncated,
    }
    records = [_unit_record(u) for u in units]
    directory = write_index(Path(out), manifest, vectors, records, source=Path(root))
    seconds = time.perf_counter() - started
    return IndexBuild(load_index(directory), extraction.files, extraction.skipped, truncated, limit, seconds)


def _embed(run: Run, task: str, codes: list[str], max_tokens: int | None, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    parts = []
    with tqdm(total=len(codes), desc="embedding", unit=" units", leave=False, disable=not progress) as bar:
        for start in range(0, len(codes), EMBED_CHUNK):
            chunk = codes[start : start + EMBED_CHUNK]
            parts.append(run.embed(chunk, task=task, max_tokens=max_tokens))
            bar.update(len(chunk))
    return np.concatenate(parts)


def _unit_record(unit: CodeUnit) -> dict[str, Any]:
    return {
        "path": unit.path,
        "name": unit.name,
        "kind": unit.kind,
        "language": unit.language,
        "start_line": unit.start_line,
        "end_line": unit.end_line,
        "hash": unit.content_hash,
    }
