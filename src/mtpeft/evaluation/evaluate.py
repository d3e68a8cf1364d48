"""Score a multi-task model on one split of each task: metrics as each task declares them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mtpeft.evaluation.metrics import compute_metrics
from mtpeft.tasks.spec import TaskKind
from mtpeft.training.batching import TaskFeatures, collate, eval_batches


@dataclass
class TaskEvaluation:
    metrics: dict[str, float]
    outputs: dict[str, Any]  # y_pred (classification) or scores (retrieval), in example order
    per_example: dict[str, list]  # what a paired bootstrap needs


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate_task(
    model,
    task: str,
    features: TaskFeatures,
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
) -> TaskEvaluation:
    was_training = model.training
    model.eval()
    collected: dict[str, list[torch.Tensor]] = {}
    order: list[int] = []
    batches = list(eval_batches(features, batch_size))
    for indices in tqdm(batches, desc=f"eval {task}", disable=not progress, leave=False):
        out = model.predict(task, _move(collate(features, indices, pad_id), device))
        for key, value in out.items():
            collected.setdefault(key, []).append(value.float().cpu())
        order.extend(indices)
    model.train(was_training)
    inverse = np.argsort(order)  # back to example order
    stacked = {k: torch.cat(v)[inverse] for k, v in collected.items()}
    spec = features.task
    if spec.kind == TaskKind.RETRIEVAL:
        from mtpeft.evaluation.baselines import retrieval_ranks, worst_for_nan

        # NaN scores last, as the ranks count them, so the prediction files rank candidates the same way.
        scores = worst_for_nan((stacked["query_emb"] @ stacked["code_emb"].T).numpy())
        ranks = retrieval_ranks(stacked["query_emb"].numpy(), stacked["code_emb"].numpy())
        metrics = compute_metrics(spec.metrics, ranks=ranks)
        return TaskEvaluation(metrics, {"scores": scores}, {"ranks": [int(r) for r in ranks]})
    y_pred = stacked["y_pred"].long().tolist()
    y_true = list(features.labels or [])
    metrics = compute_metrics(spec.metrics, y_true=y_true, y_pred=y_pred)
    return TaskEvaluation(metrics, {"y_pred": y_pred}, {"y_true": y_true, "y_pred": y_pred})
