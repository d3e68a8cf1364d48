"""Per-example prediction files in the format each benchmark's official evaluator reads, with its gold file.

Per task, in `out_dir`: `<task>.predictions.<ext>` and `<task>.answers.<ext>` (`<task>` is the task's name
made a safe file name by `mtpeft.paths.safe_filename`: the name itself for ordinary names), so that e.g.

    python CodeXGLUE/Code-Code/Defect-detection/evaluator/evaluator.py \
        -a vulnerability.answers.jsonl -p vulnerability.predictions.txt

scores the run exactly as the leaderboard would.

- CodeXGLUE Defect-detection (devign formats, binary): predictions `idx<TAB>label`; answers jsonl
  `{"idx", "target"}` (the evaluator reads only those two fields of test.jsonl).
- CodeXGLUE Clone-detection-BigCloneBench (pair): predictions and answers `idx1<TAB>idx2<TAB>label`.
- CodeXGLUE NL-code-search-Adv / AdvTest (codesearchnet, retrieval): predictions jsonl
  `{"url", "answers": [code idx, best first, top 100]}`; answers jsonl `{"url", "idx"}` (what the evaluator
  reads from test.jsonl). Its MRR counts a correct candidate below the top 100 as 0 and rounds to 4 places,
  so it can sit up to 0.01 under compute_metrics' MRR, which uses the full rank.
- Anything else: generic jsonl `{"id", "y_true", "y_pred"}` (label names), `{"id", "rank"}` or
  `{"id", "reference", "hypothesis"}`, one line per example; it holds its own gold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mtpeft.data.example import Example
from mtpeft.outputs import atomic_output
from mtpeft.paths import task_file
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskKind, TaskSpec

TOP_K = 100  # AdvTest's prediction files list the 100 best candidates
Outputs = dict[str, Any]  # y_pred | scores | hypotheses
Writer = Callable[[TaskSpec, list[Example], Outputs, Path], Path]


# ---- helpers -----------------------------------------------------------------------------------------
def _write_lines(path: Path, lines: Iterable[str]) -> Path:
    # Through a temporary file: an official evaluator never reads a half-written predictions file.
    with atomic_output(path) as out:
        out.writelines(f"{line}\n" for line in lines)
    return path


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    return _write_lines(path, (json.dumps(row, ensure_ascii=False) for row in rows))


def _int_label(task: TaskSpec, index: int) -> int:
    """The label as the CodeXGLUE evaluators int() it: the file's label if numeric, else its index."""
    label = task.label_name(index)
    return int(label) if label.lstrip("-").isdigit() else int(index)


def _numeric_ids(examples: list[Example]) -> list[int | str]:
    """Ids as the evaluators compare them: integers where every id is one (they int() or json-load them)."""
    if all(e.id.lstrip("-").isdigit() for e in examples):
        return [int(e.id) for e in examples]
    return [e.id for e in examples]


def _paths(task: TaskSpec, out_dir: Path, predictions_ext: str, answers_ext: str) -> tuple[Path, Path]:
    predictions = task_file(out_dir, task.name, f"predictions.{predictions_ext}")
    answers = task_file(out_dir, task.name, f"answers.{answers_ext}")
    return predictions, answers


# ---- official formats --------------------------------------------------------------------------------
def write_defect(task: TaskSpec, examples: list[Example], outputs: Outputs, out_dir: Path) -> Path:
    predictions, answers = _paths(task, out_dir, "txt", "jsonl")
    ids = _numeric_ids(examples)
    if not all(isinstance(i, int) for i in ids):  # the evaluator int()s every idx: use positions instead
        ids = list(range(len(examples)))
    pairs = list(zip(ids, examples, outputs["y_pred"], strict=True))
    _write_jsonl(answers, ({"idx": idx, "target": _int_label(task, e.label)} for idx, e, _ in pairs))
    return _write_lines(predictions, (f"{idx}\t{_int_label(task, pred)}" for idx, _, pred in pairs))


def write_clone(task: TaskSpec, examples: list[Example], outputs: Outputs, out_dir: Path) -> Path:
    predictions, answers = _paths(task, out_dir, "txt", "txt")
    pairs = list(zip(examples, outputs["y_pred"], strict=True))
    _write_lines(answers, (f"{e.id}\t{e.id_b}\t{_int_label(task, e.label)}" for e, _ in pairs))
    return _write_lines(predictions, (f"{e.id}\t{e.id_b}\t{_int_label(task, pred)}" for e, pred in pairs))


def write_code_search(task: TaskSpec, examples: list[Example], outputs: Outputs, out_dir: Path) -> Path:
    """Query i's correct candidate is code i (the test set's own code is the candidate pool)."""
    predictions, answers = _paths(task, out_dir, "jsonl", "jsonl")
    scores = np.asarray(outputs["scores"])
    code_ids = _numeric_ids(examples)
    urls = [e.meta.get("url") or e.id for e in examples]
    _write_jsonl(answers, ({"url": url, "idx": idx} for url, idx in zip(urls, code_ids, strict=True)))
    rows = []
    for url, row in zip(urls, scores, strict=True):
        best = np.argsort(-row, kind="stable")[:TOP_K]
        rows.append({"url": url, "answers": [code_ids[j] for j in best]})
    return _write_jsonl(predictions, rows)


# ---- generic jsonl: one row per example, as the task's kind writes it --------------------------------
def write_generic(task: TaskSpec, examples: list[Example], outputs: Outputs, out_dir: Path) -> Path:
    path = task_file(out_dir, task.name, "predictions.jsonl")
    return _write_jsonl(path, kind_of(task).prediction_rows(task, examples, outputs))


# (data format, task kind) -> writer of that benchmark's official files; everything else is generic.
WRITERS: dict[tuple[str, str], Writer] = {
    ("devign-jsonl", TaskKind.BINARY): write_defect,
    ("devign-json", TaskKind.BINARY): write_defect,
    ("bigclonebench", TaskKind.PAIR): write_clone,
    ("codesearchnet", TaskKind.RETRIEVAL): write_code_search,
}


def write_predictions(task: TaskSpec, examples: list[Example], outputs: Outputs, out_dir: Path) -> Path:
    """Write the task's prediction file (and gold answers file) into out_dir; returns the predictions path.

    outputs: `y_pred` (label indices) for classification, `scores` ([queries, candidates]) for
    retrieval, `hypotheses` for generation, in the order of `examples`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = WRITERS.get((task.format, task.kind), write_generic)
    return writer(task, examples, outputs, out_dir)
