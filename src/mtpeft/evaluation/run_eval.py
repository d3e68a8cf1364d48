"""`mtpeft evaluate RUN_DIR`: reload what a run saved, score it, write official prediction files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mtpeft.errors import DamagedFiles
from mtpeft.evaluation.evaluate import evaluate_task
from mtpeft.manifest import manifest_problem
from mtpeft.models import load_backbone
from mtpeft.paths import inside, predictions_dir, safe_filename, task_file
from mtpeft.peft_methods import get_method
from mtpeft.training.config import load_config
from mtpeft.training.model import MultiTaskModel
from mtpeft.training.task_data import RunTask, resolve_tasks

RUN_FILE = "run.json"
BEST_DIR = "best"


def verify_best(run_dir: Path) -> None:
    """best/ (module + heads) must match the manifest training wrote last; else one clear error.

    Checked before anything is loaded: a truncated or bit-flipped safetensors file would otherwise
    fail deep inside safetensors/peft, or load and score as a different model.
    """
    if not (run_dir / BEST_DIR).is_dir():
        raise DamagedFiles(f"{run_dir} holds no {BEST_DIR}/ (no trained model); train it first")
    problem = manifest_problem(run_dir / BEST_DIR)
    if problem is not None:
        raise DamagedFiles(
            f"run {run_dir.name}'s {BEST_DIR}/ is damaged ({problem}) in {run_dir / BEST_DIR}; "
            "retrain it (mtpeft train CONFIG) or restore the folder from a backup"
        )


def load_trained(run_dir: Path, device: torch.device | None = None) -> tuple[MultiTaskModel, Any, Any]:
    """The best saved module + heads on a fresh backbone: exactly what a deployment would load."""
    verify_best(run_dir)
    config = load_config(run_dir / "config.yaml")
    backbone = load_backbone(config.model, seed=config.seed)
    adapted = get_method(config.method).load(backbone, run_dir / BEST_DIR / "adapter")
    meta = json.loads((run_dir / BEST_DIR / "heads.json").read_text(encoding="utf-8"))
    tasks = resolve_tasks(config)
    model = MultiTaskModel(
        adapted,
        {n: t.spec for n, t in tasks.items()},
        hidden_size=backbone.info.hidden_size,
        pooling=meta["pooling"],
        loss_weighting=config.loss_weighting,
        head_options={"dim": config.retrieval_dim, "scale": config.retrieval_scale},
    )
    model.load_heads(run_dir / BEST_DIR)
    model.to(device or torch.device("cpu")).eval()
    return model, backbone, config


def evaluate_run(
    run_dir: Path, split: str = "test", *, baselines: bool = True, progress: bool = True
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """Per-task metrics (and baselines) on `split`; prediction files land in run_dir/predictions/split."""
    from mtpeft.evaluation.baselines import run_baselines
    from mtpeft.evaluation.predictions import write_predictions

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, backbone, config = load_trained(run_dir, device)
    tasks: dict[str, RunTask] = resolve_tasks(config)
    out_dir = predictions_dir(run_dir, split)
    metrics: dict[str, dict[str, float]] = {}
    baseline_scores: dict[str, dict[str, dict[str, float]]] = {}
    for name, task in tasks.items():
        features = task.features(split, backbone.tokenizer, seed=config.seed)
        result = evaluate_task(
            model,
            name,
            features,
            pad_id=backbone.tokenizer.pad_token_id,
            batch_size=task.entry.eval_batch_size,
            device=device,
            progress=progress,
        )
        metrics[name] = result.metrics
        write_predictions(task.spec, features.examples, result.outputs, out_dir)
        per_example = task_file(out_dir, name, "per_example.json")
        per_example.write_text(json.dumps(result.per_example), encoding="utf-8")
        if baselines:
            train = task.examples("train", seed=config.seed)
            baseline_scores[name] = run_baselines(task.spec, train, features.examples, seed=config.seed)
    inside(run_dir, run_dir / f"metrics.{safe_filename(split)}.json").write_text(
        json.dumps({"metrics": metrics, "baselines": baseline_scores}, indent=2), encoding="utf-8"
    )
    return metrics, baseline_scores
