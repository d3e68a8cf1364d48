"""Out-of-distribution scores on the pooled vectors: "this code is unlike what the run was trained on".

The statistics are fitted once (end of training, `mtpeft calibrate RUN`) from the backbone's pooled vectors
of the run's one-snippet tasks' code (train split, at most SAMPLE vectors), and stored in the run's
calibration/ folder (mtpeft.calibration_file) as two more files under its manifest:

    ood.json   format, the score used by default, the token limit and task the vectors were pooled at,
               each score's threshold (the SHARE quantile of the validation snippets' scores) and counts
    ood.npz    the bank of unit vectors (k-NN); mean and precision matrix (Mahalanobis, for a hidden size up
               to MAHALANOBIS_MAX_HIDDEN)

Two scores, a registry (SCORES); higher means less familiar:
- mahalanobis: distance to the training vectors' mean under a shared covariance shrunk by Ledoit-Wolf
  (sklearn.covariance.LedoitWolf fits it; a hidden size above the sample count needs the shrinkage);
- knn: 1 - cosine similarity to the K-th nearest of a stored sample of training vectors (Sun et al. 2022).
The default (DEFAULT_SCORE) was chosen by measurement: docs/using/calibration.md.

numpy only at read and score time; sklearn only to fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OOD_FILE = "ood.json"
ARRAYS_FILE = "ood.npz"
FORMAT = 1
SAMPLE = 2000  # training vectors kept (k-NN bank, covariance fit): bounds the file and the scoring cost
VALID_SAMPLE = 2000  # validation vectors the threshold is the quantile of
SHARE = 0.95  # of the run's own validation snippets that count as in distribution
K = 5  # neighbours: the K-th nearest, less noisy than the nearest alone on a few hundred vectors
DEFAULT_SCORE = "knn"
# Above this hidden size Mahalanobis is not fitted: its precision matrix (hidden^2 floats) would outweigh
# the k-NN bank (4 MB at 1024, 64 MB at 4096), for a score that measured worse (docs/using/calibration.md).
MAHALANOBIS_MAX_HIDDEN = 1024


@dataclass(frozen=True)
class OodStats:
    """What every OOD score needs, and the threshold each was calibrated to on validation."""

    score: str  # the one `unfamiliar` is decided by
    limit: int  # tokens the vectors were pooled at (every snippet is scored at this truncation)
    task: str | None  # the task the vectors were encoded for (task-conditioned modules), else None
    thresholds: dict[str, float]  # score -> its SHARE quantile on validation
    share: float
    counts: dict[str, int]  # train / valid vectors used
    arrays: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # mean, precision, bank

    def scores(self, vectors: np.ndarray, score: str | None = None) -> np.ndarray:
        """The score (default: the stored choice) of each row of `vectors` [n, hidden]; KeyError for a
        score not fitted (Mahalanobis above MAHALANOBIS_MAX_HIDDEN)."""
        if (score or self.score) not in self.thresholds:
            raise KeyError(
                f"OOD score {score!r} was not fitted for this run (fitted: {', '.join(self.thresholds)})"
            )
        return SCORES[score or self.score](self.arrays, np.asarray(vectors, dtype=np.float64))

    def unfamiliar(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.thresholds[self.score]

    def describe(self) -> str:
        return (
            f"{self.score} distance, {self.share:.0%} of valid within (threshold "
            f"{self.thresholds[self.score]:.4g}, {self.counts['train']} training vectors)"
        )


# ---- the scores: each maps (stored arrays, vectors) to one number per vector, higher = less familiar ----
def _mahalanobis(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    centred = x - arrays["mean"]
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, arrays["precision"], centred), 0.0))


def _knn(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    # A matrix product on at most SAMPLE stored vectors: exact and fast; no index library needed.
    bank = arrays["bank"]
    similarity = _unit(x) @ bank.T
    k = min(K, bank.shape[0])
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return 1.0 - kth


SCORES: dict[str, Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]] = {
    "mahalanobis": _mahalanobis,
    "knn": _knn,
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_ood(
    train: np.ndarray, valid: np.ndarray, *, limit: int, task: str | None, share: float = SHARE
) -> OodStats:
    """Statistics from training vectors, thresholds from validation vectors (both [n, hidden])."""
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, dtype=np.float64)
    arrays = {"bank": _unit(train).astype(np.float32)}
    if train.shape[1] <= MAHALANOBIS_MAX_HIDDEN:
        shrunk = LedoitWolf().fit(train)
        arrays |= {"mean": shrunk.location_, "precision": shrunk.precision_.astype(np.float32)}
    fitted = {name: score for name, score in SCORES.items() if name == "knn" or "precision" in arrays}
    thresholds = {
        name: float(np.quantile(score(arrays, np.asarray(valid, dtype=np.float64)), share))
        for name, score in fitted.items()
    }
    counts = {"train": len(train), "valid": len(valid)}
    return OodStats(DEFAULT_SCORE, limit, task, thresholds, share, counts, arrays)


def write_ood(folder: Path, stats: OodStats) -> None:
    head = {
        "format": FORMAT,
        "score": stats.score,
        "limit": stats.limit,
        "task": stats.task,
        "thresholds": stats.thresholds,
        "share": stats.share,
        "counts": stats.counts,
        "k": K,
    }
    (folder / OOD_FILE).write_text(json.dumps(head, indent=1), encoding="utf-8")
    with (folder / ARRAYS_FILE).open("wb") as out:
        np.savez(out, **stats.arrays)


def read_ood(folder: Path) -> OodStats | None:
    """The folder's OOD statistics; None where it has none (calibrated before OOD scores existed).
    ValueError/KeyError/OSError on a file that cannot be read (the caller reports it as damaged)."""
    if not (folder / OOD_FILE).exists():
        return None
    head = json.loads((folder / OOD_FILE).read_text(encoding="utf-8"))
    if int(head["format"]) > FORMAT:
        raise ValueError(f"OOD format {head['format']} is newer than this mtpeft reads ({FORMAT})")
    if head["score"] not in SCORES:
        raise ValueError(f"unknown OOD score {head['score']!r} (known: {', '.join(SCORES)})")
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    if "bank" not in arrays:
        raise KeyError("bank")
    thresholds = {str(k): float(v) for k, v in head["thresholds"].items()}
    if head["score"] not in thresholds:
        raise ValueError(f"no threshold for the OOD score {head['score']!r}")
    counts = {str(k): int(v) for k, v in head["counts"].items()}
    return OodStats(
        head["score"], int(head["limit"]), head["task"], thresholds, float(head["share"]), counts, arrays
    )
