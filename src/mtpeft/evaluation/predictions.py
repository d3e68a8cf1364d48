"""Per-example prediction files in the format each benchmark's official evaluator reads.

- CodeXGLUE Defect-detection evaluator: lines `idx<TAB>label`.
- CodeXGLUE Clone-detection-BigCloneBench evaluator: lines `idx1<TAB>idx2<TAB>label`.
- CodeXGLUE NL-code-search-Adv (AdvTest) evaluator: jsonl `{"url": ..., "answers": [code idx ranked]}`;
  it reads the gold url -> idx map from the test jsonl itself.
Anything else gets a generic jsonl (id, y_true, y_pred | rank).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtpeft.data.example import Example
from mtpeft.tasks.spec import TaskSpec

TOP_K = 100
Writer = Callable[[TaskSpec, list[Example], dict[str, Any], Path], Path]
WRITERS: dict[str, Writer] = {}


def register_writer(*formats: str) -> Callable[[Writer], Writer]:
    def wrap(writer: Writer) -> Writer:
        for name in formats:
            WRITERS[name] = writer
        return writer

    return wrap


@register_writer("devign-jsonl", "devign-json")
def write_defect_predictions(task: TaskSpec, examples: list[Example], outputs: dict, out_dir: Path) -> Path:
    path = out_dir / f"{task.name}.txt"
    lines = [f"{ex.id}\t{task.labels[p]}" for ex, p in zip(examples, outputs["y_pred"], strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@register_writer("bigclonebench")
def write_clone_predictions(task: TaskSpec, examples: list[Example], outputs: dict, out_dir: Path) -> Path:
    path = out_dir / f"{task.name}.txt"
    lines = [
        f"{ex.id}\t{ex.id_b}\t{task.labels[p]}" for ex, p in zip(examples, outputs["y_pred"], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@register_writer("codesearchnet")
def write_search_predictions(task: TaskSpec, examples: list[Example], outputs: dict, out_dir: Path) -> Path:
    if "scores" not in outputs:
        return write_generic_predictions(task, examples, outputs, out_dir)
    path = out_dir / f"{task.name}.jsonl"
    scores = np.asarray(outputs["scores"])
    with path.open("w", encoding="utf-8") as out:
        for row, ex in enumerate(examples):
            ranked = np.argsort(-scores[row], kind="stable")[:TOP_K]
            url = ex.meta.get("url", ex.id)
            out.write(json.dumps({"url": url, "answers": [_code_idx(examples[i]) for i in ranked]}) + "\n")
    return path


def _code_idx(example: Example) -> Any:
    return int(example.id) if example.id.isdigit() else example.id


def write_generic_predictions(task: TaskSpec, examples: list[Example], outputs: dict, out_dir: Path) -> Path:
    path = out_dir / f"{task.name}.predictions.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i, ex in enumerate(examples):
            row: dict[str, Any] = {"id": ex.id}
            if "y_pred" in outputs:
                row |= {"y_true": ex.label, "y_pred": outputs["y_pred"][i]}
            if "hypotheses" in outputs:
                row |= {"reference": ex.target, "hypothesis": outputs["hypotheses"][i]}
            out.write(json.dumps(row) + "\n")
    return path


def write_predictions(task: TaskSpec, examples: list[Example], outputs: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return WRITERS.get(task.format, write_generic_predictions)(task, examples, outputs, out_dir)
