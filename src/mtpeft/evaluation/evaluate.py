"""Score a multi-task model on one split of each task: metrics as each task declares them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mtpeft.modeling.distributed import Shard, gather_objects
from mtpeft.modeling.inputs import TaskFeatures, collate, eval_batches, to_device
from mtpeft.tasks.kinds import TaskEvaluation, kind_of


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
    shard: Shard | None = None,
    lockstep: bool = False,
) -> TaskEvaluation:
    """`shard`: with several processes, each predicts every P-th batch and the outputs are gathered,
    each example once, before scoring (every process then holds the same metrics). All processes must
    call it together; without `shard` (or with one process) the whole split is predicted here.
    `lockstep`: every process runs the same number of forward passes (a sharded model, FSDP, gathers
    its weights in each one, with every process): a process with one batch fewer predicts its first
    batch once more and drops the outputs."""
    shard = shard or Shard()
    was_training = model.training
    model.eval()
    collected: dict[str, list[Any]] = {}
    order: list[int] = []
    everyone = list(eval_batches(features, batch_size))
    batches = everyone[shard.rank :: shard.size]
    rounds = -(-len(everyone) // shard.size) if lockstep else len(batches)
    filler = batches[:1] or everyone[:1]  # a process with no batch of its own borrows the split's first
    padded = [(indices, True) for indices in batches] + [(filler[0], False)] * (rounds - len(batches))
    for indices, kept in tqdm(padded, desc=f"eval {task}", disable=not progress, leave=False):
        out = model.predict(task, to_device(collate(features, indices, pad_id, predict=True), device))
        if not kept:
            continue
        for key, value in out.items():
            # Tensors stack; lists (generated texts) concatenate.
            collected.setdefault(key, []).append(value.float().cpu() if torch.is_tensor(value) else value)
        order.extend(indices)
    model.train(was_training)
    if shard.several:
        collected, order = _gathered(collected, order)
    inverse = np.argsort(order)  # back to example order
    stacked = {k: _in_order(v, inverse) for k, v in collected.items()}
    # How outputs become metrics (and prediction-file outputs) is the task kind's business.
    return kind_of(features.task).score(features.task, stacked, features.examples)


def _gathered(collected: dict[str, list[Any]], order: list[int]) -> tuple[dict[str, list[Any]], list[int]]:
    """Every process's outputs, concatenated: the batches were dealt out, each example to one process."""
    everyone = gather_objects((collected, order))
    merged: dict[str, list[Any]] = {}
    for part, _ in everyone:
        for key, values in part.items():
            merged.setdefault(key, []).extend(values)
    return merged, [i for _, part_order in everyone for i in part_order]


def _in_order(parts: list[Any], inverse: np.ndarray) -> Any:
    if torch.is_tensor(parts[0]):
        return torch.cat(parts)[inverse]
    joined = [item for part in parts for item in part]
    return [joined[i] for i in inverse]
