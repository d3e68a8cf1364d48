"""Calibration arithmetic on a task's logits: temperature scaling, expected calibration error, and the
probability threshold that reaches a target precision. numpy, scipy and scikit-learn only (no torch), so
`mtpeft scan --precision` chooses its thresholds before any model loads.

- Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T > 0 per
  task, probabilities softmax(logits / T), T chosen to minimise the negative log-likelihood (NLL) of the
  validation split. Dividing every logit by the same positive T keeps their order, so the argmax label
  never changes; only how confident the probabilities are does.
- T is found by a bounded 1-D search (scipy's `minimize_scalar`, Brent's method) over u = log T in
  [log 0.05, log 20], not by LBFGS as in the paper's reference code: the NLL is convex in 1/T, so it is
  unimodal in log T and a bracketing search finds its minimum without a learning rate or an iteration
  budget to tune (LBFGS with a fixed step can stop short or overshoot on a nearly flat NLL), and the
  bounds keep T finite when a split is perfectly separated (its NLL falls forever as T -> 0). T = 1 is
  kept where the search finds nothing lower, so the NLL on the fitted split never rises.
- ECE with ECE_BINS equal-width confidence bins (15, as Guo et al.): sum over bins of (bin share) x
  |accuracy - mean confidence|, with a prediction's confidence its top probability and bins right-closed
  ((0, 1/15], ..., (14/15, 1]). Written here: scikit-learn's calibration_curve gives no bin counts.
- Precision thresholds: scikit-learn's precision_recall_curve over the validation split's positive-class
  probabilities; the smallest threshold whose precision reaches the target (the most recall among them),
  with the exact (Clopper-Pearson) 97.5 % lower bound of that precision from scipy's binomtest
  (`clopper_pearson`, which also gives the interval of the precision reached on other data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import binomtest

ECE_BINS = 15
T_MIN, T_MAX = 0.05, 20.0
_SEARCH_TOLERANCE = 1e-4  # in log T: T to about 0.01 %


def scaled_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) per row."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(logits / T)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)
    return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] minimising the NLL of `labels` (see the module docstring)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no examples to fit a temperature on")
    found = minimize_scalar(
        lambda u: nll(logits, labels, math.exp(u)),
        bounds=(math.log(T_MIN), math.log(T_MAX)),
        method="bounded",
        options={"xatol": _SEARCH_TOLERANCE},
    )
    fitted = math.exp(float(found.x))
    return fitted if nll(logits, labels, fitted) < nll(logits, labels) else 1.0


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width confidence bin: (low, high], its examples, their mean confidence and accuracy."""

    low: float
    high: float
    count: int
    confidence: float | None  # None: an empty bin
    accuracy: float | None


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The reliability diagram's bins of top-label confidence against accuracy."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins: index i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        member = index == i
        count = int(member.sum())
        out.append(
            ReliabilityBin(
                float(edges[i]),
                float(edges[i + 1]),
                count,
                float(confidence[member].mean()) if count else None,
                float(correct[member].mean()) if count else None,
            )
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over bins of (examples in bin / all) x |accuracy - mean confidence|."""
    table = reliability_bins(probs, labels, bins)
    total = sum(b.count for b in table)
    if total == 0:
        raise ValueError("no examples to compute the calibration error of")
    return float(
        sum(b.count / total * abs(b.accuracy - b.confidence) for b in table if b.count)  # type: ignore[operator]
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold on P(positive) chosen on a split, with what it reached there."""

    threshold: float
    precision: float
    recall: float
    flagged: int  # examples of the split at or above the threshold
    examples: int
    # One-sided 97.5 % lower bound of the precision (exact Clopper-Pearson on `flagged` examples): a
    # precision reached by flagging 2 examples says little, and this says how little.
    precision_low: float = 0.0


class TargetUnreachable(ValueError):
    """No threshold reaches the target precision on the split; `best` is the highest precision reachable."""

    def __init__(self, target: float, best: float, positives: int) -> None:
        self.target, self.best, self.positives = target, best, positives
        super().__init__(f"precision {target} is out of reach (best reachable: {best:.3f})")


def precision_threshold(
    positive_probs: np.ndarray, is_positive: np.ndarray, target: float
) -> ThresholdChoice:
    """The smallest threshold t such that flagging P(positive) >= t has precision >= target on this split.

    Raises TargetUnreachable (with the best precision any threshold gives) when none does, including a
    split without a single positive example.
    """
    from sklearn.metrics import precision_recall_curve

    scores, truth = np.asarray(positive_probs, dtype=np.float64), np.asarray(is_positive, dtype=bool)
    if not truth.any():
        raise TargetUnreachable(target, 0.0, 0)
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    # precision[i], recall[i] are those of `score >= thresholds[i]`, thresholds increasing; the last
    # precision/recall pair (1, 0) stands for flagging nothing and has no threshold.
    reached = np.flatnonzero(precision[:-1] >= target)
    if len(reached) == 0:
        raise TargetUnreachable(target, float(precision[:-1].max()), int(truth.sum()))
    i = int(reached[0])
    cut = float(thresholds[i])
    flagged = scores >= cut
    hits, count = int(truth[flagged].sum()), int(flagged.sum())
    low, _ = clopper_pearson(hits, count)
    return ThresholdChoice(cut, float(precision[i]), float(recall[i]), count, len(scores), low)


def clopper_pearson(hits: int, count: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided `level` interval of a proportion hits / count (scipy's
    binomtest); its low end is the one-sided (1 + level) / 2 lower bound (97.5 % at 95 %)."""
    if count < 1:
        raise ValueError("no trials to bound a proportion of")
    interval = binomtest(hits, count).proportion_ci(level, method="exact")
    return float(interval.low), float(interval.high)
