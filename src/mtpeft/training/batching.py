"""The training sampler: per task, an endless stream of length-grouped index batches.

Padding every example to max_length wastes most of the compute on short code, so batches are built
from examples of similar length and padded only to the longest in the batch (modeling/inputs.py).
Both can be switched off (`length_grouping`, `dynamic_padding`) to reproduce the pad-to-max reference.

An example with several inputs (both snippets of a clone pair, a seq2seq prompt and target) is padded
per input, to that input's longest row in the batch, so sorting by the total length is not enough: two
pairs of equal total can be (500, 20) and (20, 500), and a batch of both pads 2 x 1000. Grouping is
stratified instead: sort by the widest input, cut into strata of about sqrt(batches) batches, sort each
stratum by the next input, and so on (measured on BigCloneBench at 512 tokens: 29% of positions were
padding when sorted by the total, 14% stratified).

A batch holds `batch_size` examples, or, with a token budget (`batch_tokens`), as many as fit in that
many padded positions: length-grouped batches of short code then hold more examples, so every step
computes a similar number of positions and the matmuls stay large. fairseq's `--max-tokens` and
Megatron's token-based batches do this; neither is a library we can call on our features, so the
greedy fill below is ours.
"""

from __future__ import annotations

import math
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
    `role_lengths`: per example, the unpadded length of each input, which grouping sorts by when there
    are several; `lengths` (the total) otherwise.
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
        role_lengths: Sequence[Sequence[int]] | None = None,
        min_batch: int = 1,
    ) -> None:
        if batch_tokens is not None and widths is None:
            raise ValueError("a token budget needs each example's padded widths")
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.length_grouping = length_grouping
        self.batch_tokens = batch_tokens
        self.widths = widths
        multi_input = role_lengths is not None and len(role_lengths) > 0 and len(role_lengths[0]) > 1
        self.role_lengths = role_lengths if multi_input else None
        # Several processes share each batch: a token-budget batch then holds at least one example each.
        self.min_budget_batch = max(MIN_BUDGET_BATCH, min_batch)
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
                for i in self._grouped(order[start : start + chunk])
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

    def _grouped(self, chunk: list[int]) -> list[int]:
        """The chunk longest first: by total length, or stratified by each input's length (see top)."""
        if self.role_lengths is None:
            return sorted(chunk, key=lambda j: -self.lengths[j])
        totals = [sum(self.role_lengths[j][role] for j in chunk) for role in range(len(self.role_lengths[0]))]
        roles = sorted(range(len(totals)), key=lambda role: -totals[role])  # widest input first
        return self._stratified(chunk, roles)

    def _stratified(self, items: list[int], roles: list[int]) -> list[int]:
        lengths = self.role_lengths
        assert lengths is not None
        ordered = sorted(items, key=lambda j: -lengths[j][roles[0]])
        per_batch = self._examples_per_batch()
        if len(roles) == 1 or len(ordered) <= per_batch:
            return ordered
        batches = math.ceil(len(ordered) / per_batch)
        stratum = per_batch * max(1, math.isqrt(batches))
        return [
            i
            for start in range(0, len(ordered), stratum)
            for i in self._stratified(ordered[start : start + stratum], roles[1:])
        ]

    def _examples_per_batch(self) -> int:
        """Examples in a typical batch (the grouping chunk is 50 of them)."""
        if self.batch_tokens is None or not self.lengths:
            return self.batch_size
        typical = sorted(self.lengths)[len(self.lengths) // 2] or 1
        return max(self.min_budget_batch, self.batch_tokens // typical)

    def _fill_to_budget(self, order: list[int]) -> list[list[int]]:
        """Consecutive examples of `order`, each batch as many as fit in the budget (at least two)."""
        assert self.widths is not None and self.batch_tokens is not None
        batches: list[list[int]] = []
        batch: list[int] = []
        longest: list[int] = []
        for index in order:
            widths = self.widths[index]
            grown = [max(a, b) for a, b in zip(longest, widths, strict=True)] if batch else list(widths)
            if len(batch) >= self.min_budget_batch and (len(batch) + 1) * sum(grown) > self.batch_tokens:
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
