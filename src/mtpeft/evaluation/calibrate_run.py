"""Fit a run's calibration on its validation split and store it: the end of `mtpeft train`, and
`mtpeft calibrate RUN` for a run trained before calibration existed (or to fit it again).

Each task with a classification head (binary, multiclass, pair) gets a temperature; tasks trained through
the LM head (formulation instruct), retrieval and generation tasks get none and are listed as skipped with
the reason. The split is the one the run selected its best step on (`valid`, subsampled as in training).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtpeft.calibration_file import INSTRUCT_NOT_SCALED, Calibration, TaskCalibration, write_calibration
from mtpeft.evaluation import calibration as cal
from mtpeft.evaluation import ood
from mtpeft.evaluation.ood import OodStats
from mtpeft.modeling.distributed import Shard, barrier

if TYPE_CHECKING:
    from mtpeft.modeling.build import TrainedRun

SPLIT = "valid"


def task_scores(logits: np.ndarray, gold: np.ndarray, temperature: float, bins: int = cal.ECE_BINS) -> dict:
    """NLL and ECE of the raw probabilities (T = 1) and of the calibrated ones (T), with the reliability
    bins of both: what calibration.json and `mtpeft evaluate` report per task."""
    before = cal.scaled_probabilities(logits)
    after = cal.scaled_probabilities(logits, temperature)
    return {
        "examples": len(gold),
        "nll_before": cal.nll(logits, gold),
        "nll_after": cal.nll(logits, gold, temperature),
        "ece_before": cal.expected_calibration_error(before, gold, bins),
        "ece_after": cal.expected_calibration_error(after, gold, bins),
        "reliability_before": [vars(b) for b in cal.reliability_bins(before, gold, bins)],
        "reliability_after": [vars(b) for b in cal.reliability_bins(after, gold, bins)],
    }


def fit_task(logits: np.ndarray, gold: np.ndarray, labels: list[str], kind: str) -> TaskCalibration:
    temperature = cal.fit_temperature(logits, gold)
    positive = len(labels) - 1 if kind in ("binary", "pair") else None  # the scanner's positive label
    return TaskCalibration(
        temperature,
        list(labels),
        positive,
        task_scores(logits, gold, temperature),
        np.asarray(logits, dtype=float).round(6).tolist(),
        [int(g) for g in gold],
    )


def calibrate_run(run_dir: Path, *, progress: bool = False, shard: Shard | None = None) -> Calibration | None:
    """Fit and write RUN_DIR/calibration/ from the run's best/ (its current calibration, if any, is
    ignored and replaced). With several processes all call it; each predicts its share and the main one
    writes. Returns what was written (None on the other processes)."""
    from mtpeft.evaluation.run_eval import process_device, score_task, split_features
    from mtpeft.heads.classification import ClassificationHead
    from mtpeft.modeling.build import TrainedRun, load_trained
    from mtpeft.modeling.task_data import resolve_tasks
    from mtpeft.tasks.kinds import kind_of

    shard = shard or Shard()
    device = process_device()
    model, backbone, config = load_trained(run_dir, device, calibrated=False)
    fitted: dict[str, TaskCalibration] = {}
    skipped: dict[str, str] = {}
    for name, task in resolve_tasks(config).items():
        head = model.heads[name] if name in model.heads else None  # noqa: SIM401 (ModuleDict has no get)
        if not isinstance(head, ClassificationHead):
            skipped[name] = _why_not(task.spec.kind, name in model.lm_tasks)
            continue
        features = split_features(task, SPLIT, backbone, config.seed)
        if not features.examples:
            skipped[name] = f"its {SPLIT} split is empty"
            continue
        shown = progress and shard.rank == 0
        result = score_task(model, backbone, name, task, features, device, shown, shard)
        gold = np.asarray(kind_of(task.spec).gold(features.examples)["y_true"])
        fitted[name] = fit_task(result.outputs["logits"], gold, list(task.spec.labels or ()), task.spec.kind)
    calibration = None
    if shard.rank == 0:
        ood = fit_run_ood(TrainedRun(model, backbone, config), run_dir)
        calibration = Calibration(SPLIT, cal.ECE_BINS, fitted, skipped, ood)
    if calibration is not None:
        write_calibration(run_dir, calibration)
    barrier()  # with several processes: none loads the run (to evaluate it) before calibration/ is whole
    return calibration


def fit_run_ood(trained: TrainedRun, run_dir: Path) -> OodStats | None:
    """OOD statistics (mtpeft.evaluation.ood) from the pooled vectors of the run's one-snippet tasks'
    code: training snippets (a seeded sample of at most ood.SAMPLE) for the statistics, validation
    snippets (at most ood.VALID_SAMPLE) for the threshold. Encoded by Run itself, so that the vectors are
    exactly those `Run.analyze` scores later. None where the run has no one-snippet task with a head."""
    from mtpeft.api import Run
    from mtpeft.modeling.task_data import resolve_tasks

    run = Run(trained, run_dir)
    names = [n for n in run.snippet_tasks if n not in run.model.lm_tasks]
    if not names:
        return None
    tasks = resolve_tasks(run.config)
    limit = min(run.tasks[n].max_length for n in names)
    task = names[0] if run._per_task else None  # a task-conditioned module: the first task's vectors

    def vectors(split: str, cap: int) -> np.ndarray:
        seed = run.config.seed
        codes = list(dict.fromkeys(e.code for n in names for e in tasks[n].examples(split, seed=seed)))
        codes = random.Random(seed).sample(codes, min(cap, len(codes)))
        return run.ood_vectors(codes, limit, task) if codes else np.zeros((0, 0))

    train, valid = vectors("train", ood.SAMPLE), vectors(SPLIT, ood.VALID_SAMPLE)
    if len(train) < 2 or len(valid) == 0:
        return None
    return ood.fit_ood(train, valid, limit=limit, task=task)


def _why_not(kind: str, instruct: bool) -> str:
    if instruct:
        return INSTRUCT_NOT_SCALED
    return f"a {kind} task has no class probabilities to calibrate"
