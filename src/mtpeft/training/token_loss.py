"""How the token losses of tasks trained through the LM head are averaged: MFTCoder's three modes, named.

MFTCoder (codefuse-ai, `mftcoder_accelerate/src/utils/loss_utils.py`) calls them case1, case2 and case3;
here they are named by what they average over. Each step holds one micro-batch per task (or more under
`proportional` sampling), and the task weighting (`loss_weighting`: equal, learned, ...) still combines
the tasks' losses; the token loss decides how each generative task's loss is made of its tokens:

- `task-token` (MFTCoder case3, the default): each task's loss is the mean over all of its target
  tokens in the step, so a task's share does not depend on how long its targets are.
- `batch-token` (case1): every target token of the step's generative micro-batches weighs the same, so a
  task with longer targets (repair) outweighs one with short ones (a label word) in the generative share.
- `sample` (case2): each example's mean token loss first, then the mean over examples, so a long target
  and a short one count the same.

A micro-batch's loss must be normalised before its backward pass (one task's activations are in memory at
a time), so `prepare` reads the token counts of the whole step's batches first.
"""

from __future__ import annotations

from collections import Counter

import torch

from mtpeft.modeling.inputs import Batch
from mtpeft.registry import Registry

TOKEN_NORM = "token_norm"  # the batch key `prepare` writes: what the summed token losses are divided by


class TokenLoss:
    """One averaging mode: `prepare` sees the step's batches, `reduce` one batch's token losses."""

    name: str
    description: str
    # Whether `prepare` divides by the step's token counts (made global with several processes, so
    # that the processes' losses add up to the step's loss) rather than a per-batch mean.
    global_norm: bool = False

    def prepare(self, tasks: list[str], batches: list[Batch]) -> list[Batch]:
        """The step's batches (task i's batch is batches[i]), with what `reduce` needs written into them."""
        return batches

    def reduce(
        self, nll: torch.Tensor, mask: torch.Tensor, samples: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """One micro-batch's loss from its token losses `nll` [rows, K] (0 where `mask` is False) and the
        example each token belongs to (`samples`, -1 where none)."""
        return nll.sum() / batch.get(TOKEN_NORM, mask.sum().clamp(min=1))


def _is_generative(batch: Batch) -> bool:
    return "num_target_tokens" in batch


class TaskTokenLoss(TokenLoss):
    name = "task-token"
    description = "each task's mean over its target tokens in the step (MFTCoder case3)"
    global_norm = True

    def prepare(self, tasks: list[str], batches: list[Batch]) -> list[Batch]:
        counts = Counter(tasks)
        tokens: Counter[str] = Counter()
        for task, batch in zip(tasks, batches, strict=True):
            if _is_generative(batch):
                tokens[task] += batch["num_target_tokens"]
        # The trainer divides a task's micro-batch losses by how many it has (counts), so each holds
        # its share of the task's pooled token mean times that count.
        for task, batch in zip(tasks, batches, strict=True):
            if _is_generative(batch):
                batch[TOKEN_NORM] = max(tokens[task], 1) / counts[task]
        return batches


class BatchTokenLoss(TokenLoss):
    name = "batch-token"
    description = "every target token of the step's generative batches weighs the same (MFTCoder case1)"
    global_norm = True

    def prepare(self, tasks: list[str], batches: list[Batch]) -> list[Batch]:
        counts = Counter(tasks)
        generative = [(t, b) for t, b in zip(tasks, batches, strict=True) if _is_generative(b)]
        total = max(sum(b["num_target_tokens"] for _, b in generative), 1)
        n_tasks = len({t for t, _ in generative})
        # Summed over the generative tasks (each weighted 1/count by the trainer, as above), the terms
        # give n_tasks x the step's token mean: the generative tasks keep the share of the task weighting,
        # inside which every token counts the same.
        for task, batch in generative:
            batch[TOKEN_NORM] = total / (n_tasks * counts[task])
        return batches


class SampleLoss(TokenLoss):
    name = "sample"
    description = "each example's mean token loss, then the mean over examples (MFTCoder case2)"

    def reduce(
        self, nll: torch.Tensor, mask: torch.Tensor, samples: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        # Packed rows hold several examples, so examples are told apart by `samples`, not by row.
        ids = samples[mask]
        count = int(ids.max()) + 1 if ids.numel() else 1
        sums = torch.zeros(count, device=nll.device, dtype=nll.dtype).index_add(0, ids, nll[mask])
        sizes = torch.zeros(count, device=nll.device, dtype=nll.dtype).index_add(
            0, ids, torch.ones_like(nll[mask])
        )
        present = sizes > 0
        return (sums[present] / sizes[present]).mean()


TOKEN_LOSSES: Registry[TokenLoss] = Registry("token loss", base=TokenLoss, field="token_loss")
for _mode in (TaskTokenLoss(), BatchTokenLoss(), SampleLoss()):
    TOKEN_LOSSES.register(_mode.name, _mode)
