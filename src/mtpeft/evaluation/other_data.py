"""What `mtpeft evaluate RUN --data TASK=PATH` adds for a classification task: do the run's probabilities,
its precision thresholds and its out-of-distribution (OOD) scores still hold on that data?

- calibration: ECE (ECE_BINS equal-width bins) and NLL of the head's probabilities on the data at T = 1
  and at the run's temperature (run_eval.calibration_scores, as `mtpeft evaluate` reports on the run's
  own split); "calibrated": false, T = 1, where the run has no temperature for the task.
- precision (binary and pair tasks): the threshold on P(positive) chosen on the run's validation split for
  the target precision (Calibration.precision_threshold: what `scan --precision` flags at), and the
  precision and recall that threshold reaches on the data, the precision with its exact (Clopper-Pearson)
  95% interval. A target out of reach on validation is recorded with the best reachable precision.
- ood: every OOD score the run fitted (its default first) on the data's distinct snippets against the
  run's own test split (as the run configured it: max_eval_examples, seed): AUROC with the data as the
  positive class (sklearn's roc_auc_score), and the share of each set beyond the stored threshold. A
  pair task's snippets are the code of both functions of each pair.

Each part is a plain dict (JSON in evaluation.json and the store). A part that cannot be measured holds
`skipped` with the reason, so an evaluation never fails for want of it. The summary functions at the end
are the few words the console, `mtpeft evaluations` and the report show per evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mtpeft.api import Run
    from mtpeft.calibration_file import Calibration
    from mtpeft.data.example import Example
    from mtpeft.modeling.model import MultiTaskModel
    from mtpeft.modeling.task_data import RunTask
    from mtpeft.tasks.spec import TaskSpec

DEFAULT_PRECISION = 0.9  # `mtpeft evaluate --precision`: the level CI gates are commonly set at
OWN_SPLIT = "test"  # the run's own split the other data's OOD scores are set against
SKIPPED = "skipped"
CALIBRATION, PRECISION, OOD = "calibration", "precision", "ood"  # the parts of EvaluationRecord.details
CALIBRATE_HINT = "`mtpeft calibrate RUN_DIR` fits them"
FLAGGING_KINDS = ("binary", "pair")  # two labels, the second one a finding: thresholds apply


def details(
    run: Run,
    task: RunTask,
    examples: list[Example],
    outputs: dict[str, Any],
    *,
    target: float,
    own: OwnVectors,
) -> dict[str, Any]:
    """The three parts for a classification task's evaluation; {} for any other kind of task."""
    from mtpeft.tasks.kinds import kind_of
    from mtpeft.tasks.kinds.classification import ClassificationKind

    kind = kind_of(task.spec)
    if not isinstance(kind, ClassificationKind):  # retrieval, generation: no class probabilities
        return {}
    parts = {CALIBRATION: calibration_part(run.model, task.name, outputs, examples)}
    if task.spec.kind in FLAGGING_KINDS:
        gold = np.asarray(kind.gold(examples)["y_true"])
        parts[PRECISION] = precision_part(run.model.calibration, task, outputs, gold, target)
    return parts | {OOD: ood_part(run, task, examples, own)}


# ---- calibration: ECE and NLL before and after the run's temperature ---------------------------------
def calibration_part(
    model: MultiTaskModel, task: str, outputs: dict[str, Any], examples: list[Example]
) -> dict[str, Any]:
    from mtpeft.evaluation.run_eval import calibration_scores

    if "logits" not in outputs:
        return {SKIPPED: _not_calibrated(model.calibration, task)}
    return calibration_scores(model, task, outputs["logits"], examples)


def _not_calibrated(calibration: Calibration | None, task: str) -> str:
    from mtpeft.calibration_file import UNCALIBRATED

    if calibration is None:
        return f"{UNCALIBRATED}: the run has no temperatures; {CALIBRATE_HINT}"
    return calibration.skipped.get(task, f"the run has no temperature for this task; {CALIBRATE_HINT}")


# ---- precision reached on the data at the validation threshold --------------------------------------
def precision_part(
    calibration: Calibration | None, task: RunTask, outputs: dict[str, Any], gold: np.ndarray, target: float
) -> dict[str, Any]:
    from mtpeft.evaluation.calibration import TargetUnreachable, scaled_probabilities

    fitted = calibration.tasks.get(task.name) if calibration is not None else None
    if fitted is None or fitted.positive is None or "logits" not in outputs:
        why = _not_calibrated(calibration, task.name)
        return {SKIPPED: f"{why} (no validation outputs to choose a threshold from)"}
    head = {"target": target, "split": calibration.split, "positive_label": fitted.labels[fitted.positive]}
    try:
        choice = calibration.precision_threshold(task.name, target)
    except TargetUnreachable as err:
        return head | {"reachable": False, "best_reachable": err.best, "valid_positives": err.positives}
    probs = scaled_probabilities(outputs["logits"], fitted.temperature)[:, fitted.positive]
    chosen = {"threshold": choice.threshold, "valid": vars(choice)}
    return head | {"reachable": True} | chosen | reached(probs >= choice.threshold, gold == fitted.positive)


def reached(flagged: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
    """Precision (with its exact 95% interval) and recall of flagging `flagged` where `positive` is the
    truth; None where undefined (nothing flagged: no precision; no positive example: no recall)."""
    from mtpeft.evaluation.calibration import clopper_pearson

    hits, count, positives = int((flagged & positive).sum()), int(flagged.sum()), int(positive.sum())
    return {
        "examples": len(flagged),
        "positives": positives,
        "flagged": count,
        "true_positives": hits,
        "precision": hits / count if count else None,
        "precision_ci": list(clopper_pearson(hits, count)) if count else None,
        "recall": hits / positives if positives else None,
    }


def write_probabilities(
    run: Run, task: RunTask, examples: list[Example], logits: np.ndarray, out_dir: Path
) -> Path:
    """`<task>.probabilities.jsonl` beside the prediction files: per example its id(s), gold label index,
    the head's raw logits and the probabilities at the run's temperature (what thresholds apply to), so
    that every number of the evaluation can be recomputed from the files."""
    from mtpeft.evaluation.calibration import scaled_probabilities
    from mtpeft.outputs import atomic_output
    from mtpeft.paths import task_file

    probs = scaled_probabilities(logits, run.temperatures.get(task.name, 1.0))
    path = task_file(out_dir, task.name, "probabilities.jsonl")
    with atomic_output(path) as out:
        for e, raw, p in zip(examples, np.asarray(logits).tolist(), probs.tolist(), strict=True):
            ids = {"id": e.id} | ({"id_b": e.id_b} if e.id_b is not None else {})
            out.write(json.dumps(ids | {"gold": e.label, "logits": raw, "probabilities": p}) + "\n")
    return path


# ---- OOD: the data's snippets against the run's own test split -------------------------------------
class OwnVectors:
    """The pooled vectors of each task's own test snippets, encoded once per evaluate call (several
    --data folders of one task are all set against the same split)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._cache: dict[str, tuple[np.ndarray, int] | str] = {}

    def of(self, task: RunTask) -> tuple[np.ndarray, int] | str:
        """(vectors, snippets) of the task's own test split, or why there are none."""
        from mtpeft.errors import MtpeftError

        if task.name not in self._cache:
            try:
                own = task.examples(OWN_SPLIT, seed=self.run.config.seed)
            except (MtpeftError, OSError) as err:
                self._cache[task.name] = f"the run's own {OWN_SPLIT} split cannot be read ({err})"
            else:
                codes = snippet_codes(task.spec, own)
                self._cache[task.name] = (encode(self.run, codes), len(codes)) if codes else "it is empty"
        return self._cache[task.name]


def snippet_codes(spec: TaskSpec, examples: list[Example]) -> list[str]:
    """The distinct code snippets of the examples: each example's code; both functions of each pair."""
    from mtpeft.tasks.kinds import kind_of

    roles = [role for role in kind_of(spec).inputs if role.startswith("code")]
    return list(dict.fromkeys(text for e in examples for role in roles if (text := getattr(e, role))))


def encode(run: Run, codes: list[str]) -> np.ndarray:
    stats = run.ood
    assert stats is not None  # ood_part checks first
    return run.ood_vectors(codes, stats.limit, stats.task)


def ood_part(run: Run, task: RunTask, examples: list[Example], own: OwnVectors) -> dict[str, Any]:
    from mtpeft.calibration_file import NO_OOD

    stats = run.ood
    if stats is None:
        return {SKIPPED: f"the run has {NO_OOD}; {CALIBRATE_HINT}"}
    codes = snippet_codes(task.spec, examples)
    if not codes:
        return {SKIPPED: "the task contributes no code to score"}
    mine = own.of(task)
    if isinstance(mine, str):
        return {SKIPPED: f"nothing to compare with: {mine}"}
    own_vectors, own_count = mine
    other_vectors = encode(run, codes)
    names = [stats.score, *(n for n in stats.thresholds if n != stats.score)]  # the default first
    scores = {
        name: separation(
            stats.scores(own_vectors, name), stats.scores(other_vectors, name), stats.thresholds[name]
        )
        for name in names
    }
    what = "the code of both functions of each pair" if task.spec.kind == "pair" else "each example's code"
    return {
        "default": stats.score,
        "share": stats.share,
        "snippets": f"distinct snippets: {what}",
        "own_split": OWN_SPLIT,
        "own_snippets": own_count,
        "other_snippets": len(codes),
        "scores": scores,
    }


def separation(own: np.ndarray, other: np.ndarray, threshold: float) -> dict[str, float]:
    """How well one OOD score tells the other data (positive class) from the run's own split."""
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(len(own)), np.ones(len(other))]
    return {
        "threshold": threshold,
        "auroc": float(roc_auc_score(truth, np.r_[own, other])),
        "own_beyond": float(np.mean(own > threshold)),
        "other_beyond": float(np.mean(other > threshold)),
    }


# ---- a few words per evaluation: console, `mtpeft evaluations`, report -----------------------------
def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def ece_summary(details: dict[str, Any]) -> str:
    """'0.212 -> 0.104' (T = 1, then the run's T); '0.212 (uncalibrated)'; '-'."""
    part = details.get(CALIBRATION)
    if not part or SKIPPED in part:
        return "-"
    if not part["calibrated"]:
        return f"{_num(part['ece_before'])} (uncalibrated)"
    return f"{_num(part['ece_before'])} -> {_num(part['ece_after'])}"


def precision_summary(details: dict[str, Any]) -> str:
    """'0.612 [0.450, 0.760] (target 0.9)'; 'target 0.9 unreachable on valid (best 0.710)'; '-'."""
    part = details.get(PRECISION)
    if not part or SKIPPED in part:
        return "-"
    if not part["reachable"]:
        return f"target {part['target']:g} unreachable on {part['split']} (best {part['best_reachable']:.3f})"
    if part["precision"] is None:
        return f"nothing flagged (target {part['target']:g})"
    low, high = part["precision_ci"]
    return f"{part['precision']:.3f} [{low:.3f}, {high:.3f}] (target {part['target']:g})"


def ood_summary(details: dict[str, Any]) -> str:
    """'knn 0.973' (AUROC of the default score, own test split vs this data); '-'."""
    part = details.get(OOD)
    if not part or SKIPPED in part:
        return "-"
    return f"{part['default']} {_num(part['scores'][part['default']]['auroc'])}"


def skipped_notes(details: dict[str, Any]) -> list[str]:
    """'precision: uncalibrated: ...' for each part that was not measured."""
    return [f"{name}: {part[SKIPPED]}" for name, part in details.items() if SKIPPED in part]


def detail_rows(details: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) lines of an evaluation's details for the console; skipped parts are left to
    skipped_notes."""
    from mtpeft.evaluation.calibration import ECE_BINS

    rows: list[tuple[str, str]] = []
    part = details.get(CALIBRATION) or {}
    if part and SKIPPED not in part:
        after = f"T = {part['temperature']:.3g}" if part["calibrated"] else "uncalibrated"
        for name, label in (("ece", f"ECE ({ECE_BINS} bins)"), ("nll", "NLL")):
            values = f"{_num(part[f'{name}_before'])} -> {_num(part[f'{name}_after'])}"
            rows.append((f"{label}, T = 1 -> {after}", values))
    rows += _precision_rows(details.get(PRECISION) or {})
    rows += _ood_rows(details.get(OOD) or {})
    return rows


def _precision_rows(part: dict[str, Any]) -> list[tuple[str, str]]:
    if not part or SKIPPED in part:
        return []
    what = f"threshold for precision {part['target']:g} ({part['split']})"
    if not part["reachable"]:
        best = f"unreachable: best {part['split']} precision {part['best_reachable']:.3f}"
        return [(what, f"{best} ({part['valid_positives']} positive examples)")]
    valid = part["valid"]
    chosen = (
        f"P({part['positive_label']}) >= {part['threshold']:.4f}: precision {valid['precision']:.3f} "
        f"(97.5% lower bound {valid['precision_low']:.3f}), recall {valid['recall']:.3f}"
    )
    ci = part["precision_ci"]
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    reached = (
        f"precision {_num(part['precision'])}{interval} ({part['flagged']} of {part['examples']} flagged), "
        f"recall {_num(part['recall'])} (of {part['positives']} positive)"
    )
    return [(what, chosen), ("reached on this data (exact 95% CI)", reached)]


def _ood_rows(part: dict[str, Any]) -> list[tuple[str, str]]:
    if not part or SKIPPED in part:
        return []
    rows = []
    for name, s in part["scores"].items():
        default = " (default)" if name == part["default"] else ""
        rows.append(
            (
                f"OOD {name}{default}: AUROC, own {part['own_split']} vs this data",
                f"{_num(s['auroc'])}; beyond threshold: own {s['own_beyond']:.1%} of "
                f"{part['own_snippets']}, this data {s['other_beyond']:.1%} of {part['other_snippets']}",
            )
        )
    return rows
