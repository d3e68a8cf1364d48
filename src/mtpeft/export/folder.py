"""An export folder on disk: its file names, and reading it back checked (stdlib only, no torch).

`read_export` verifies every file against MANIFEST.json before anything is parsed or loaded, so a
truncated graph, a deleted tokenizer or an edited export.json is one DamagedFiles naming the file and
what to do, not an onnxruntime or JSON traceback (or, worse, a graph that loads and answers differently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtpeft.errors import ConfigError, DamagedFiles
from mtpeft.manifest import MANIFEST_FILE, manifest_problem

EXPORT_FILE = "export.json"
GRAPH_FILE = "model.onnx"
PAIR_HEADS_FILE = "pair_heads.npz"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"  # inside TOKENIZER_DIR: what the `tokenizers` library reads
CALIBRATION_DIR = "calibration"  # as calibration_file.CALIBRATION_DIR: read_calibration reads it here too
FORMAT = 1
POOLED_OUTPUT = "pooled"  # the graph output pair heads and OOD statistics read


def probs_output(task: str) -> str:
    return f"probs.{task}"


def embedding_output(task: str) -> str:
    return f"embedding.{task}"


def is_export(path: str | Path) -> bool:
    """Whether `path` is (or was meant to be) an export folder rather than a run directory: it holds
    export.json or model.onnx (a folder missing one of them is then refused as damaged, not as a run)."""
    folder = Path(path)
    return (folder / EXPORT_FILE).is_file() or (folder / GRAPH_FILE).is_file()


@dataclass(frozen=True)
class ExportFolder:
    """A checked export folder and its export.json."""

    path: Path
    meta: dict[str, Any]

    @property
    def graph(self) -> Path:
        return self.path / self.meta["graph"]["file"]

    @property
    def tokenizer(self) -> Path:
        return self.path / self.meta["tokenizer"]["file"]

    @property
    def pair_heads(self) -> Path | None:
        name = self.meta.get("pair_heads")
        return self.path / name if name else None

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.meta["tasks"])

    @property
    def precision(self) -> str:
        return str(self.meta["graph"]["precision"])


def read_export(path: str | Path) -> ExportFolder:
    """The export folder at `path`, every file checked against its manifest first."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError("no such export folder (what `mtpeft export RUN --out DIR` writes)", path=folder)
    problem = manifest_problem(folder)
    if problem is not None:
        raise DamagedFiles(
            f"export folder {folder} is damaged ({problem}); export the run again with "
            f"`mtpeft export RUN_DIR --out {folder}`, or restore the folder from a copy"
        )
    try:
        meta = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
        _check_meta(meta)
    except (OSError, ValueError, KeyError, TypeError) as err:  # ValueError: JSON and UTF-8 errors
        raise DamagedFiles(
            f"{folder / EXPORT_FILE} is unreadable ({err}); export the run again with "
            f"`mtpeft export RUN_DIR --out {folder}`"
        ) from None
    if meta["format"] > FORMAT:
        raise ConfigError(
            f"written by a newer mtpeft (export format {meta['format']}; this one reads up to {FORMAT}); "
            "upgrade mtpeft to load it",
            path=folder / EXPORT_FILE,
        )
    return ExportFolder(folder.resolve(), meta)


def _check_meta(meta: Any) -> None:
    """KeyError/TypeError/ValueError where export.json lacks what the runtime reads."""
    if not isinstance(meta, dict):
        raise TypeError("not a JSON object")
    if not isinstance(meta["format"], int):
        raise ValueError(f"format {meta['format']!r} is not a whole number")
    for key in ("graph", "tokenizer", "tasks", "source"):
        if not isinstance(meta[key], dict):
            raise TypeError(f"'{key}' is not an object")
    for name, task in meta["tasks"].items():
        if not isinstance(task, dict) or not {"kind", "labels", "answer", "max_length"} <= set(task):
            raise ValueError(f"task {name!r} lacks kind, labels, answer or max_length")


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST_FILE
