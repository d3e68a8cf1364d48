"""`mtpeft evaluate RUN_DIR`: reload what a run saved, score it, write official prediction files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mtpeft import layout
from mtpeft.evaluation.evaluate import evaluate_task
from mtpeft.modeling.build import load_trained
from mtpeft.modeling.distributed import Shard
from mtpeft.modeling.task_data import RunTask, resolve_tasks

if TYPE_CHECKING:
    import numpy as np

    from mtpeft.data.example import Example
    from mtpeft.modeling.model import MultiTaskModel

CALIBRATION_KEY = "calibration"  # in metrics.<split>.json: per task, ECE and NLL before/after


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    *,
    baselines: bool = True,
    progress: bool = True,
    shard: Shard | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """Per-task metrics (and baselines) on `split`; prediction files land in run_dir/predictions/split.

    `shard`: with several processes, all call it together; each predicts its share, every process gets
    the metrics, and only the main one writes files and scores the baselines."""
    from mtpeft.evaluation.baselines import run_baselines
    from mtpeft.evaluation.predictions import write_predictions

    shard = shard or Shard()
    writes = shard.rank == 0
    device = process_device()
    model, backbone, config = load_trained(run_dir, device)
    tasks: dict[str, RunTask] = resolve_tasks(config)
    out_dir = layout.predictions_dir(run_dir, split)
    metrics: dict[str, dict[str, float]] = {}
    baseline_scores: dict[str, dict[str, dict[str, float]]] = {}
    calibration: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        features = split_features(task, split, backbone, config.seed)
        result = score_task(model, backbone, name, task, features, device, progress and writes, shard)
        metrics[name] = result.metrics
        if not writes:
            continue
        if "logits" in result.outputs:
            calibration[name] = calibration_scores(model, name, result.outputs["logits"], features.examples)
        write_predictions(task.spec, features.examples, result.outputs, out_dir)
        per_example = layout.per_example_path(run_dir, split, name)
        per_example.write_text(json.dumps(result.per_example), encoding="utf-8")
        if baselines:
            train = task.examples("train", seed=config.seed)
            baseline_scores[name] = run_baselines(task.spec, train, features.examples, seed=config.seed)
    if not writes:
        return metrics, baseline_scores
    written = {"metrics": metrics, "baselines": baseline_scores, CALIBRATION_KEY: calibration}
    layout.metrics_path(run_dir, split).write_text(json.dumps(written, indent=2), encoding="utf-8")
    return metrics, baseline_scores


def calibration_scores(
    model: MultiTaskModel, task: str, logits: np.ndarray, examples: list[Example]
) -> dict[str, Any]:
    """ECE and NLL of a head's probabilities on these examples, raw (T = 1) and at the run's temperature
    (`calibrated` false and T = 1 when the run has no calibration for the task)."""
    from mtpeft.evaluation.calibrate_run import task_scores
    from mtpeft.tasks.kinds import kind_of

    fitted = model.calibration.temperatures if model.calibration is not None else {}
    gold = kind_of(model.tasks[task]).gold(examples)["y_true"]
    scores = task_scores(logits, gold, fitted.get(task, 1.0))
    return {"calibrated": task in fitted, "temperature": fitted.get(task, 1.0), **scores}


def split_features(task: RunTask, split: str, backbone: Any, seed: int) -> Any:
    """One split of a task, tokenised as the run was trained."""
    return task.features(split, backbone.tokenizer, seed=seed, lm_head=backbone.info.lm_head)


def score_task(
    model: Any,
    backbone: Any,
    name: str,
    task: RunTask,
    features: Any,
    device: torch.device,
    progress: bool,
    shard: Shard,
) -> Any:
    """One task's outputs on `features`, with the run's eval batch size (evaluation and calibration)."""
    return evaluate_task(
        model,
        name,
        features,
        pad_id=backbone.tokenizer.pad_token_id,
        batch_size=task.entry.eval_batch_size,
        device=device,
        progress=progress,
        shard=shard,
    )


def process_device() -> torch.device:
    """This process's device: its own GPU under a launcher (LOCAL_RANK), else the first GPU, else CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
