"""The training sampler: per task, an endless stream of length-grouped index batches.

Padding every example to max_length wastes most of the compute on short code, so batches are built
from examples of similar length and padded only to the longest in the batch (modeling/inputs.py).
Both can be switched off (`length_grouping`, `dynamic_padding`) to reproduce the pad-to-max reference.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class BatchCursor:
    """Where one task's batch stream is: epoch and batch position (saved in checkpoints)."""

    epoch: int = 0
    position: int = 0


class TaskBatcher:
    """Endless, deterministic stream of index batches for one task (re-shuffled each epoch)."""

    def __init__(self, lengths: list[int], batch_size: int, *, seed: int, length_grouping: bool) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.length_grouping = length_grouping
        self.cursor = BatchCursor()
        self._epoch_batches: list[list[int]] | None = None

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size
        if self.length_grouping:
            # Sort inside large shuffled chunks: similar lengths share a batch, order stays random.
            chunk = size * 50
            order = [
                i
                for start in range(0, len(order), chunk)
                for i in sorted(order[start : start + chunk], key=lambda j: -self.lengths[j])
            ]
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) < size:
            batches.pop()  # a tiny last batch hurts in-batch contrastive loss; it comes back next epoch
        rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return max(1, len(self.lengths) // self.batch_size)

    def next(self) -> list[int]:
        if self._epoch_batches is None:
            self._epoch_batches = self.batches_for_epoch(self.cursor.epoch)
        if self.cursor.position >= len(self._epoch_batches):
            self.cursor = BatchCursor(self.cursor.epoch + 1, 0)
            self._epoch_batches = self.batches_for_epoch(self.cursor.epoch)
        batch = self._epoch_batches[self.cursor.position]
        self.cursor.position += 1
        return batch

    def restore(self, cursor: dict[str, int]) -> None:
        self.cursor = BatchCursor(**cursor)
        self._epoch_batches = None
