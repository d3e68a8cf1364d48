"""The training sampler: per task, an endless stream of length-grouped index batches.

Padding every example to max_length wastes most of the compute on short code, so batches are built
from examples of similar length and padded only to the longest in the batch (modeling/inputs.py).
Both can be switched off (`length_grouping`, `dynamic_padding`) to reproduce the pad-to-max reference.

A batch holds `batch_size` examples, or, with a token budget (`batch_tokens`), as many as fit in that
many padded positions: length-grouped batches of short code then hold more examples, so every step
computes a similar number of positions and the matmuls stay large. fairseq's `--max-tokens` and
Megatron's token-based batches do this; neither is a library we can call on our features, so the
greedy fill below is ours.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

MIN_BUDGET_BATCH = 2  # in-batch contrastive losses need a negative; one example would give a zero loss


@dataclass
class BatchCursor:
    """Where one task's batch stream is: epoch and batch position (saved in checkpoints)."""

    epoch: int = 0
    position: int = 0


class TaskBatcher:
    """Endless, deterministic stream of index batches for one task (re-shuffled each epoch).

    `widths`: per example, the length of each of its padded inputs (one per input role; e.g. both
    snippets of a pair), which the token budget counts as the batch will be padded: examples x the sum
    of each input's longest row. Needed only with `batch_tokens`.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        *,
        seed: int,
        length_grouping: bool,
        batch_tokens: int | None = None,
        widths: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if batch_tokens is not None and widths is None:
            raise ValueError("a token budget needs each example's padded widths")
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.length_grouping = length_grouping
        self.batch_tokens = batch_tokens
        self.widths = widths
        self.cursor = BatchCursor()
        self._epoch_batches: list[list[int]] | None = None
        self._epoch_length: int | None = None

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.length_grouping:
            # Sort inside large shuffled chunks: similar lengths share a batch, order stays random.
            chunk = self._examples_per_batch() * 50
            order = [
                i
                for start in range(0, len(order), chunk)
                for i in sorted(order[start : start + chunk], key=lambda j: -self.lengths[j])
            ]
        if self.batch_tokens is None:
            size = self.batch_size
            batches = [order[i : i + size] for i in range(0, len(order), size)]
            short_last = len(batches[-1]) < size
        else:
            batches = self._fill_to_budget(order)
            short_last = self._positions(batches[-1]) < self.batch_tokens // 2
        if len(batches) > 1 and short_last:
            batches.pop()  # a tiny last batch hurts in-batch contrastive loss; it comes back next epoch
        rng.shuffle(batches)
        return batches

    def _examples_per_batch(self) -> int:
        """Examples in a typical batch (the grouping chunk is 50 of them)."""
        if self.batch_tokens is None or not self.lengths:
            return self.batch_size
        typical = sorted(self.lengths)[len(self.lengths) // 2] or 1
        return max(MIN_BUDGET_BATCH, self.batch_tokens // typical)

    def _fill_to_budget(self, order: list[int]) -> list[list[int]]:
        """Consecutive examples of `order`, each batch as many as fit in the budget (at least two)."""
        assert self.widths is not None and self.batch_tokens is not None
        batches: list[list[int]] = []
        batch: list[int] = []
        longest: list[int] = []
        for index in order:
            widths = self.widths[index]
            grown = [max(a, b) for a, b in zip(longest, widths, strict=True)] if batch else list(widths)
            if len(batch) >= MIN_BUDGET_BATCH and (len(batch) + 1) * sum(grown) > self.batch_tokens:
                batches.append(batch)
                batch, grown = [], list(widths)
            batch.append(index)
            longest = grown
        if batch:
            batches.append(batch)
        return batches

    def _positions(self, batch: list[int]) -> int:
        assert self.widths is not None
        columns = zip(*(self.widths[i] for i in batch), strict=True)
        return len(batch) * sum(max(column) for column in columns)

    def __len__(self) -> int:
        """Batches in one epoch (with a token budget, counted on the first epoch's batches)."""
        if self.batch_tokens is None:
            return max(1, len(self.lengths) // self.batch_size)
        if self._epoch_length is None:
            self._epoch_length = len(self.batches_for_epoch(0))
        return self._epoch_length

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
