"""Agreement, measured not assumed: the exported graph beside the PyTorch run on the run's own test split.

Both sides answer through the same public API (`Run` and `ExportedRun` share `BaseRun`), on the same
texts, and are scored by the task kind's own metrics. Per task:

    examples        how many test examples were compared (the first N of the split, as the run reads it)
    answers_agree   how many got the same answer: the same label (classification, pair), the same top-1
                    candidate among the compared examples (retrieval)
    max_difference  the largest absolute difference of a probability (classification, pair) or of an
                    embedding component (retrieval) over those examples
    metrics         {"pytorch": ..., "onnx": ...} and their difference (`metric_change`, onnx - pytorch)

An fp32 graph must agree on every answer, within FP32_TOLERANCE, or the export fails naming the task;
an int8 graph's agreement is reported, and a task whose metric drops by more than INT8_SAFE_DROP is
marked `safe_to_quantize: false`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mtpeft.errors import ExportMismatch
from mtpeft.registry import Registry
from mtpeft.tasks.kinds import kind_of

if TYPE_CHECKING:
    from mtpeft.api import BaseRun
    from mtpeft.data.example import Example
    from mtpeft.tasks.spec import TaskSpec

FP32_TOLERANCE = 1e-4
INT8_SAFE_DROP = 0.01  # a larger drop of any of a task's metrics: the task is not safe to quantize

Answers = dict[str, np.ndarray]


def _probabilities(run: BaseRun, name: str, examples: list[Example]) -> Answers:
    answers = run.analyze([e.code for e in examples], [name])
    return {"probs": _table(run, name, [a[name] for a in answers])}


def _pair(run: BaseRun, name: str, examples: list[Example]) -> Answers:
    answers = run.compare([e.code for e in examples], [e.code_b or "" for e in examples], name)
    return {"probs": _table(run, name, answers)}


def _embedding(run: BaseRun, name: str, examples: list[Example]) -> Answers:
    queries = run.embed([e.query or "" for e in examples], name, query=True)
    return {"queries": queries, "codes": run.embed([e.code for e in examples], name)}


def _table(run: BaseRun, name: str, predictions: list[Any]) -> np.ndarray:
    labels = run.tasks[name].labels
    return np.array([[p["probabilities"][label] for label in labels] for p in predictions], dtype=np.float32)


# How each exported answer (export/rules.py's TaskExport.answer) is collected from a run.
COLLECT: Registry[Callable[[BaseRun, str, list[Example]], Answers]] = Registry("exported answer")
COLLECT.register("probabilities", _probabilities)
COLLECT.register("pair", _pair)
COLLECT.register("embedding", _embedding)


def collect(run: BaseRun, answer: str, name: str, examples: list[Example]) -> Answers:
    """A task's answers on `examples` (empty arrays for no examples)."""
    return COLLECT[answer](run, name, examples) if examples else {}


def compare(spec: TaskSpec, examples: list[Example], reference: Answers, exported: Answers) -> dict[str, Any]:
    """One task's agreement record (see the module docstring)."""
    if not examples:
        return {"examples": 0}
    if "probs" in reference:
        ours, theirs = reference["probs"].argmax(-1), exported["probs"].argmax(-1)
        difference = float(np.abs(reference["probs"] - exported["probs"]).max())
        answer = "label"
    else:
        ours, theirs = (_top1(a["queries"], a["codes"]) for a in (reference, exported))
        difference = max(float(np.abs(reference[k] - exported[k]).max()) for k in ("queries", "codes"))
        answer = "top-1 candidate"
    before, after = _metrics(spec, examples, reference), _metrics(spec, examples, exported)
    return {
        "examples": len(examples),
        "answer": answer,
        "answers_agree": int((ours == theirs).sum()),
        "max_difference": difference,
        "metrics": {"pytorch": before, "onnx": after},
        "metric_change": {k: after[k] - before[k] for k in before},
    }


def _top1(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return (queries @ codes.T).argmax(-1)


def _metrics(spec: TaskSpec, examples: list[Example], answers: Answers) -> dict[str, float]:
    """The kind's own metrics of these answers (what `mtpeft evaluate` reports for the split)."""
    import torch

    if "probs" in answers:
        outputs = {"y_pred": torch.from_numpy(answers["probs"].argmax(-1))}
    else:
        outputs = {
            "query_emb": torch.from_numpy(answers["queries"]),
            "code_emb": torch.from_numpy(answers["codes"]),
        }
    return {k: float(v) for k, v in kind_of(spec).score(spec, outputs, examples).metrics.items()}


def require_fp32_agreement(records: dict[str, dict[str, Any]]) -> None:
    """ExportMismatch naming the first task whose fp32 answers differ from the PyTorch run's."""
    for name, record in records.items():
        if not record["examples"]:
            continue
        disagree = record["examples"] - record["answers_agree"]
        if disagree or record["max_difference"] > FP32_TOLERANCE:
            raise ExportMismatch(
                f"the exported fp32 graph does not answer task '{name}' as the PyTorch run does: "
                f"{disagree} of {record['examples']} test examples get another {record['answer']}, the "
                f"largest difference is {record['max_difference']:.2e} (allowed: {FP32_TOLERANCE:g}); "
                "nothing was written. Please report it with the run's model and method"
            )


def mark_quantization(records: dict[str, dict[str, Any]]) -> list[str]:
    """Mark each task's int8 record safe_to_quantize (no metric drops by more than INT8_SAFE_DROP);
    returns the tasks that are not."""
    unsafe = []
    for name, record in records.items():
        drops = [-change for change in record.get("metric_change", {}).values()]
        record["safe_to_quantize"] = not drops or max(drops) <= INT8_SAFE_DROP
        if not record["safe_to_quantize"]:
            unsafe.append(name)
    return unsafe
