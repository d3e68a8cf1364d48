"""`mtpeft evaluate RUN_DIR`: reload what a run saved, score it, write official prediction files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mtpeft.evaluation.evaluate import evaluate_task
from mtpeft.models import load_backbone
from mtpeft.peft_methods import get_method
from mtpeft.config import load_config
from mtpeft.modeling.model import MultiTaskModel
from mtpeft.modeling.task_data import RunTask, resolve_tasks

RUN_FILE = "run.json"


def load_trained(run_dir: Path, device: torch.device | None = None) -> tuple[MultiTaskModel, Any, Any]:
    """The best saved module + heads on a fresh backbone: exactly what a deployment would load."""
    config = load_config(run_dir / "config.yaml")
    backbone = load_backbone(config.model, seed=config.seed)
    adapted = get_method(config.method).load(backbone, run_dir / "best" / "adapter")
    meta = json.loads((run_dir / "best" / "heads.json").read_text(encoding="utf-8"))
    tasks = resolve_tasks(config)
    model = MultiTaskModel(
        adapted,
        {n: t.spec for n, t in tasks.items()},
        hidden_size=backbone.info.hidden_size,
        pooling=meta["pooling"],
        loss_weighting=config.loss_weighting,
        head_options={"dim": config.retrieval_dim, "scale": config.retrieval_scale},
    )
    model.load_heads(run_dir / "best")
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
    out_dir = run_dir / "predictions" / split
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
        per_example = out_dir / f"{name}.per_example.json"
        per_example.write_text(json.dumps(result.per_example), encoding="utf-8")
        if baselines:
            train = task.examples("train", seed=config.seed)
            baseline_scores[name] = run_baselines(task.spec, train, features.examples, seed=config.seed)
    (run_dir / f"metrics.{split}.json").write_text(
        json.dumps({"metrics": metrics, "baselines": baseline_scores}, indent=2), encoding="utf-8"
    )
    return metrics, baseline_scores
