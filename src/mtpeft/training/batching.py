"""Per-task tokenisation, length-grouped batches and dynamic padding.

Padding every example to max_length wastes most of the compute on short code, so batches are
built from examples of similar length and padded only to the longest in the batch. Both can be
switched off (`length_grouping`, `dynamic_padding`) to reproduce the pad-to-max reference.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mtpeft.data.example import Example
from mtpeft.tasks.spec import TaskKind, TaskSpec
from mtpeft.config import TaskEntry

# Sequences of each kind of input: (feature key, Example attribute, length field of TaskEntry)
_INPUTS_BY_KIND: dict[TaskKind, list[tuple[str, str, str]]] = {
    TaskKind.BINARY: [("input_ids", "code", "max_length")],
    TaskKind.MULTICLASS: [("input_ids", "code", "max_length")],
    TaskKind.PAIR: [("input_ids", "code", "max_length"), ("input_ids_b", "code_b", "max_length")],
    TaskKind.RETRIEVAL: [
        ("input_ids", "code", "max_length"),
        ("query_input_ids", "query", "max_query_length"),
    ],
}


@dataclass
class TaskFeatures:
    """Token ids of every example of one split of one task (unpadded)."""

    task: TaskSpec
    examples: list[Example]
    sequences: dict[str, list[list[int]]]
    labels: list[int] | None
    lengths: list[int] = field(default_factory=list)  # total tokens per example, for grouping

    def __len__(self) -> int:
        return len(self.examples)


def tokenize_task(task: TaskSpec, entry: TaskEntry, examples: list[Example], tokenizer) -> TaskFeatures:
    sequences: dict[str, list[list[int]]] = {}
    for key, attribute, length_field in _INPUTS_BY_KIND[task.kind]:
        texts = [getattr(ex, attribute) or "" for ex in examples]
        encoded = tokenizer(texts, truncation=True, max_length=getattr(entry, length_field), padding=False)
        sequences[key] = encoded["input_ids"]
    labels = [ex.label for ex in examples] if task.kind.is_classification else None
    lengths = [sum(len(seqs[i]) for seqs in sequences.values()) for i in range(len(examples))]
    return TaskFeatures(task, examples, sequences, labels, lengths)


def collate(
    features: TaskFeatures, indices: list[int], pad_id: int, *, pad_to: int | None = None
) -> dict[str, Any]:
    """Stack one batch; pads to the batch's longest sequence, or to `pad_to` when given."""
    batch: dict[str, Any] = {}
    real_tokens = padded_positions = 0
    for key, seqs in features.sequences.items():
        rows = [seqs[i] for i in indices]
        width = pad_to or max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, seq in enumerate(rows):
            ids[row, : len(seq)] = torch.tensor(seq[:width], dtype=torch.long)
            mask[row, : len(seq)] = 1
        batch[key] = ids
        batch[key.replace("input_ids", "attention_mask")] = mask
        real_tokens += int(mask.sum())
        padded_positions += mask.numel()
    if features.labels is not None:
        batch["labels"] = torch.tensor([features.labels[i] for i in indices], dtype=torch.long)
    batch["num_tokens"] = real_tokens
    batch["num_positions"] = padded_positions
    batch["indices"] = indices
    return batch


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


def eval_batches(features: TaskFeatures, batch_size: int) -> Iterator[list[int]]:
    """Evaluation order: sorted by length (fast), every example exactly once."""
    order = sorted(range(len(features)), key=lambda i: -features.lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
