"""Write records in the published formats the normal readers load (byte-stable: fixed key order,
sorted nothing implicitly, `\\n` line ends, UTF-8)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mtpeft.data.default_suite.sources import Function
from mtpeft.data.inspect import regex_tokens
from mtpeft.outputs import atomic_output


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as out:  # a build stopped part-way leaves no truncated split file
        for line in lines:
            out.write(line + "\n")


def _json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------
# CodeSearchNet jsonl (py-search, py-summarize)


def codesearchnet_record(func: Function, idx: int) -> dict:
    qualname = func.key[len(func.group) + 1 :]
    return {
        "repo": "python/stdlib",
        "path": func.path,
        "func_name": qualname,
        "language": "python",
        "code": func.source,
        "code_tokens": regex_tokens(func.source),
        "docstring": func.summary,
        "docstring_tokens": regex_tokens(func.summary),
        "url": f"stdlib/{func.key}",
        "idx": idx,
    }


def write_codesearchnet(folder: Path, splits: dict[str, Sequence[Function]]) -> None:
    _write_jsonl_splits(folder, splits, codesearchnet_record)


# ---------------------------------------------------------------------------------------------------
# Devign jsonl (py-defect)


@dataclass(frozen=True)
class DefectRecord:
    project: str
    commit_id: str
    target: int  # 1 = buggy
    func: str


def write_devign(folder: Path, splits: dict[str, Sequence[DefectRecord]]) -> None:
    _write_jsonl_splits(folder, splits, lambda r, idx: {**asdict(r), "idx": idx})


def _write_jsonl_splits(folder: Path, splits: dict[str, Sequence[Any]], to_record: Callable) -> None:
    """One <split>.jsonl per split; `idx` runs on across splits, so every example id is unique."""
    idx = 0
    for split, items in splits.items():
        lines = []
        for item in items:
            lines.append(_json(to_record(item, idx)))
            idx += 1
        _write_lines(folder / f"{split}.jsonl", lines)


# ---------------------------------------------------------------------------------------------------
# BigCloneBench (py-clone): data.jsonl holds each distinct function once; <split>.txt holds the pairs


@dataclass(frozen=True)
class ClonePair:
    code_a: str
    code_b: str
    label: int  # 1 = clone


def write_bigclonebench(folder: Path, splits: dict[str, Sequence[ClonePair]]) -> None:
    ids: dict[str, str] = {}  # code -> idx; identical code shares one id, as in BigCloneBench

    def idx_of(code: str) -> str:
        return ids.setdefault(code, str(len(ids) + 1))

    for split, pairs in splits.items():
        lines = [f"{idx_of(p.code_a)}\t{idx_of(p.code_b)}\t{p.label}" for p in pairs]
        _write_lines(folder / f"{split}.txt", lines)
    _write_lines(folder / "data.jsonl", (_json({"func": code, "idx": idx}) for code, idx in ids.items()))
