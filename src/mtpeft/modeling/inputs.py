"""Model inputs: per-task tokenisation, dynamic padding into batches, evaluation order.

A batch holds every encoded input of its task by role, so the model can encode each once:

    {"inputs": {role: {"input_ids": [B, T], "attention_mask": [B, T]}},   # roles: kind.inputs
     "labels": [B] (labelled kinds), "num_tokens", "num_positions", "indices"}

A task trained through the language-model head (formulation instruct) has one input, "lm", the model's
own keyword arguments, and its target tokens as "lm_labels" (modeling/lm_inputs.py).

Padding every example to max_length wastes most of the compute on short code, so batches are padded
only to their longest sequence (`pad_to` restores the pad-to-max reference); training groups similar
lengths into batches (training/batching.py) and evaluation runs longest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mtpeft.config import TaskEntry
from mtpeft.data.example import Example
from mtpeft.modeling.lm_inputs import LmSequences, collate_lm, tokenize_lm, uses_lm
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.kinds.base import MAX_LENGTH_FIELD
from mtpeft.tasks.spec import TaskSpec

Batch = dict[str, Any]


@dataclass
class TaskFeatures:
    """Token ids of every example of one split of one task (unpadded), by input role."""

    task: TaskSpec
    examples: list[Example]
    sequences: dict[str, list[list[int]]]  # role -> token ids per example
    labels: list[int] | None
    lengths: list[int] = field(default_factory=list)  # total tokens per example, for grouping
    lm: LmSequences | None = None  # set for a task trained through the LM head (then `sequences` is empty)

    def __len__(self) -> int:
        return len(self.examples)


def tokenize_task(
    task: TaskSpec, entry: TaskEntry, examples: list[Example], tokenizer, *, lm_head: str | None = None
) -> TaskFeatures:
    """Token ids of every example; `lm_head` is the backbone's ("causal", "seq2seq" or None)."""
    kind = kind_of(task)
    labels = [ex.label for ex in examples] if kind.labelled else None
    if uses_lm(task, entry):
        lm = tokenize_lm(task, entry, examples, tokenizer, lm_head)
        lengths = [len(p) + len(t) for p, t in zip(lm.prompts, lm.targets, strict=True)]
        return TaskFeatures(task, examples, {}, labels, lengths, lm)
    sequences: dict[str, list[list[int]]] = {}
    for role in kind.inputs:
        texts = [getattr(ex, role) or "" for ex in examples]
        max_length = getattr(entry, MAX_LENGTH_FIELD[role])
        sequences[role] = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    lengths = [sum(len(seqs[i]) for seqs in sequences.values()) for i in range(len(examples))]
    return TaskFeatures(task, examples, sequences, labels, lengths)


def pad(rows: list[list[int]], pad_id: int, *, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ids and attention mask, as wide as the longest row (or `pad_to`, truncating)."""
    width = pad_to or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, seq in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq[:width], dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def collate(
    features: TaskFeatures,
    indices: list[int],
    pad_id: int,
    *,
    pad_to: int | None = None,
    predict: bool = False,
) -> Batch:
    """Stack one batch; pads to the batch's longest sequence, or to `pad_to` when given (not for tasks
    trained through the LM, whose rows hold a prompt and a target). `predict`: a batch for
    `MultiTaskModel.predict` (differs from a training batch only for those tasks)."""
    if features.lm is not None:
        batch = collate_lm(features.lm, indices, pad_id, predict=predict)
        if features.labels is not None:
            batch["labels"] = torch.tensor([features.labels[i] for i in indices], dtype=torch.long)
        return batch | {"indices": indices}
    inputs = {}
    for role, seqs in features.sequences.items():
        inputs[role] = pad([seqs[i] for i in indices], pad_id, pad_to=pad_to)
    masks = [encoded["attention_mask"] for encoded in inputs.values()]
    batch: Batch = {"inputs": inputs}
    if features.labels is not None:
        batch["labels"] = torch.tensor([features.labels[i] for i in indices], dtype=torch.long)
    batch["num_tokens"] = sum(int(mask.sum()) for mask in masks)
    batch["num_positions"] = sum(mask.numel() for mask in masks)
    batch["indices"] = indices
    return batch


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch with every tensor (nested ones included) on `device`."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(batch)


def padded_widths(features: TaskFeatures, *, pad_to: int | None = None) -> list[tuple[int, ...]]:
    """Per example, the width each of its inputs takes in a batch before padding to the batch's longest
    (`pad_to`: every code input is that wide): what a token budget counts (training/batching.py).
    A decoder's row is prompt + target; an encoder-decoder's are the prompt and the target apart.
    Packed rows are counted as unpacked ones, an upper bound."""
    if features.lm is not None:
        lm = features.lm
        if lm.lm_head == "seq2seq":
            return [(len(p), len(t)) for p, t in zip(lm.prompts, lm.targets, strict=True)]
        return [(len(p) + len(t),) for p, t in zip(lm.prompts, lm.targets, strict=True)]
    roles = list(features.sequences.values())
    if pad_to is not None:
        return [(pad_to,) * len(roles)] * len(features)
    return [tuple(len(seqs[i]) for seqs in roles) for i in range(len(features))]


def eval_batches(features: TaskFeatures, batch_size: int) -> Iterator[list[int]]:
    """Evaluation order: sorted by length (fast), every example exactly once."""
    order = sorted(range(len(features)), key=lambda i: -features.lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
