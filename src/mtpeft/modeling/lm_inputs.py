"""Inputs of tasks trained through the language-model head: prompt and target tokens, batches, packing.

A task in formulation `instruct` (every generation task; binary, pair and multiclass tasks on request)
has no head: its example becomes a prompt, its target a text (a label word, or the reference output),
and the model's own LM head learns to write the target after the prompt. Only the target's tokens are
scored (the prompt's get label -100, as in every instruction-tuning recipe).

Prompts, by the backbone's LM head:

- decoder (`causal`): the conversation of `Kind.prompt` through the tokenizer's chat template, or the
  plain "role: text" one where it has none (prompting/backends/local.py; tiny-llama's BERT tokenizer).
  That is the prompt `mtpeft prompt` asks the same model, so a tuned run starts where its zero-shot
  baseline stands, and an instruct/chat model is asked in the format it was trained on. Prompt and target
  form one sequence; the target ends with the end-of-sequence token (which closes an assistant turn).
- encoder-decoder (`seq2seq`): the user turn as plain text into the encoder (T5-style models have no
  chat format, and no system message to read); the target, ended by the end token, is the decoder's.

Only the code is ever cut, to `max_length` tokens per snippet (as the heads formulation reads it), so
the instruction always survives; targets are cut to `max_target_length` tokens.

Batches: decoder rows are LEFT padded with explicit position ids, so every row's target ends in the
last column and the model computes vocabulary logits for the last few columns only (`logits_to_keep`),
never for every prompt token. `packing` instead concatenates several examples into one row (see
`_pack`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mtpeft.config import TaskEntry
from mtpeft.data.example import Example
from mtpeft.errors import ModelLoadError
from mtpeft.prompting.templates import Code, Conversation, render_code
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskSpec

Batch = dict[str, Any]
IGNORE = -100  # the label of a token that is not scored (cross_entropy's ignore_index)
_SENTINEL = "\ue000{}\ue001"  # private-use characters mark where code goes in the rendered prompt


@dataclass
class LmSequences:
    """Token ids of one split of one task trained through the LM head (unpadded)."""

    lm_head: str  # "causal" | "seq2seq"
    prompts: list[list[int]]
    targets: list[list[int]]  # the gold target of each example, end token included
    choices: list[list[int]] | None  # instruct classification: each label word's ids (end included)
    end_id: int
    packing: bool = False
    pack_width: int = 0  # tokens a packed row holds: the split's longest prompt + target


def uses_lm(spec: TaskSpec, entry: TaskEntry) -> bool:
    """Whether the task trains through the LM head (formulation instruct) rather than a head."""
    return kind_of(spec).formulation(spec, entry.formulation) == "instruct"


def end_token_id(tokenizer: Any) -> int:
    """The token that closes every target: end-of-sequence, else a BERT-style [SEP]."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return int(token_id)
    raise ModelLoadError(
        "the tokenizer has neither an end-of-sequence nor a separator token, so a generated answer "
        "could not end; use a model whose tokenizer defines eos_token"
    )


# ---- tokens ---------------------------------------------------------------------------------------------
class PromptEncoder:
    """Prompt and target token ids of a task's examples, for one tokenizer and kind of LM head."""

    def __init__(self, tokenizer: Any, lm_head: str) -> None:
        self.tokenizer = tokenizer
        self.lm_head = lm_head
        self.end_id = end_token_id(tokenizer)

    def ids(self, text: str, limit: int | None = None) -> list[int]:
        if not text:
            return []
        cut = {"truncation": True, "max_length": limit} if limit else {}
        return self.tokenizer(text, add_special_tokens=False, **cut)["input_ids"]

    def prompt(self, conversation: Conversation, max_code_tokens: int) -> list[int]:
        text, codes = self._rendered(conversation)
        ids: list[int] = []
        for segment in text.split("\ue001"):
            body, _, number = segment.partition("\ue000")
            ids += self.ids(body)
            if number:
                ids += self.ids(codes[int(number)], max_code_tokens)
        # T5-style encoders were pre-trained on inputs closed by the end token.
        return ids + [self.end_id] if self.lm_head == "seq2seq" else ids

    def target(self, text: str, max_tokens: int) -> list[int]:
        return self.ids(text, max(max_tokens - 1, 1))[: max_tokens - 1] + [self.end_id]

    def _rendered(self, conversation: Conversation) -> tuple[str, list[str]]:
        """The prompt text with a sentinel where each code goes, and the codes (cut in tokens later)."""
        from mtpeft.prompting.backends.local import render_chat

        codes: list[str] = []
        messages = []
        for turn in conversation:
            content = ""
            for part in turn.parts:
                if isinstance(part, Code):
                    content += render_code(_SENTINEL.format(len(codes)))
                    codes.append(part.text)
                else:
                    content += part
            messages.append({"role": turn.role, "content": content})
        if self.lm_head == "seq2seq":
            return "\n\n".join(m["content"] for m in messages if m["role"] == "user"), codes
        return render_chat(self.tokenizer, messages), codes


def tokenize_lm(
    task: TaskSpec, entry: TaskEntry, examples: list[Example], tokenizer: Any, lm_head: str | None
) -> LmSequences:
    if lm_head is None:
        raise ModelLoadError(
            f"task '{task.name}' trains through the language-model head, but the model was loaded "
            "without one (mtpeft loads it with one when a run has such a task)"
        )
    kind = kind_of(task)
    encoder = PromptEncoder(tokenizer, lm_head)
    prompts = [encoder.prompt(kind.prompt(task, e), entry.max_length) for e in examples]
    targets = [encoder.target(kind.target(task, e), entry.max_target_length) for e in examples]
    words = kind.choices(task)
    choices = [encoder.target(w, entry.max_target_length) for w in words] if words else None
    # A packed row is as wide as the split's longest example: never wider than an unpacked row could be.
    width = max((len(p) + len(t) for p, t in zip(prompts, targets, strict=True)), default=0)
    return LmSequences(lm_head, prompts, targets, choices, encoder.end_id, entry.packing, width)


# ---- batches --------------------------------------------------------------------------------------------
def collate_lm(seqs: LmSequences, indices: list[int], pad_id: int, *, predict: bool = False) -> Batch:
    """A training batch (prompt + gold target), or for `predict` the prompts alone (generation) or one row
    per example and answer word (instruct classification, each word's likelihood scored)."""
    prompts = [seqs.prompts[i] for i in indices]
    if not predict:
        targets = [seqs.targets[i] for i in indices]
        if seqs.packing:
            return _pack(prompts, targets, pad_id, max(seqs.pack_width, *map(len, prompts)))
        return _rows(seqs.lm_head, prompts, targets, pad_id)
    if seqs.choices is None:
        return prompt_batch(seqs, indices, pad_id)
    rows = [(p, c) for p in prompts for c in seqs.choices]  # example-major: row i*L + j is word j
    batch = _rows(seqs.lm_head, [p for p, _ in rows], [c for _, c in rows], pad_id)
    return batch | {"num_choices": len(seqs.choices)}


def _rows(lm_head: str, prompts: list[list[int]], targets: list[list[int]], pad_id: int) -> Batch:
    if lm_head == "seq2seq":
        inputs = _right_padded(prompts, pad_id)
        labels = _right_padded(targets, IGNORE)["input_ids"]
        samples = torch.arange(len(targets))[:, None].expand_as(labels).masked_fill(labels == IGNORE, -1)
        return _batch({"lm": inputs}, labels, samples, keep=None, real=inputs["attention_mask"])
    rows = [p + t for p, t in zip(prompts, targets, strict=True)]
    inputs = _left_padded(rows, pad_id)
    width = inputs["input_ids"].shape[1]
    longest = max(len(t) for t in targets)
    # Column c's logits predict token c + 1: the last `longest` tokens need the `longest + 1` last columns.
    labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for row, target in enumerate(targets):
        labels[row, longest - len(target) :] = torch.tensor(target)
    samples = torch.arange(len(rows))[:, None].expand_as(labels).masked_fill(labels == IGNORE, -1)
    assert width >= longest + 1, "every row holds a prompt before its target"
    return _batch({"lm": inputs}, labels, samples, keep=longest + 1, real=inputs["attention_mask"])


def prompt_batch(seqs: LmSequences, indices: list[int], pad_id: int) -> Batch:
    """The prompts alone, to generate from."""
    prompts = [seqs.prompts[i] for i in indices]
    # Decoders generate after the last column, so their prompts are left padded; encoders read any padding.
    pad = _right_padded if seqs.lm_head == "seq2seq" else _left_padded
    inputs = pad(prompts, pad_id)
    mask = inputs["attention_mask"]
    return {"inputs": {"lm": inputs}, "num_tokens": int(mask.sum()), "num_positions": mask.numel()}


def _pack(prompts: list[list[int]], targets: list[list[int]], pad_id: int, capacity: int) -> Batch:
    """Examples packed into as few rows of `capacity` tokens as first-fit (longest first) allows.

    No token attends across examples: the attention mask is 4D, block-diagonal and causal (query q sees
    key k only if both belong to the same example and k <= q), position ids restart at 0 for each
    example, and a pad position sees only itself (a fully masked row would give NaN). Each example's
    tokens thus see exactly what they would see alone in a row, so their losses are the same
    (tests/modeling/test_lm_inputs.py checks it token by token).
    """
    examples = [p + t for p, t in zip(prompts, targets, strict=True)]
    rows: list[list[int]] = []
    for i in sorted(range(len(examples)), key=lambda i: -len(examples[i])):
        fit = next((r for r in rows if sum(len(examples[j]) for j in r) + len(examples[i]) <= capacity), None)
        if fit is None:
            rows.append([i])
        else:
            fit.append(i)
    width = max(sum(len(examples[j]) for j in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n, n_target = len(examples[i]), len(targets[i])
            ids[r, start : start + n] = torch.tensor(examples[i])
            positions[r, start : start + n] = torch.arange(n)
            segments[r, start : start + n] = i
            labels[r, start + n - n_target : start + n] = torch.tensor(targets[i])
            start += n
    first = int((labels != IGNORE).any(0).nonzero()[0])  # the first column holding a target token
    inputs = {"input_ids": ids, "attention_mask": _block_causal_mask(segments), "position_ids": positions}
    samples = segments.masked_fill(labels == IGNORE, -1)
    return _batch(
        {"lm": inputs}, labels[:, first:], samples[:, first:], keep=width - first + 1, real=segments >= 0
    )


def _block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """Additive 4D mask [rows, 1, width, width]: 0 where attention is allowed, the dtype minimum elsewhere
    (transformers passes a 4D mask through as given; a boolean one is read differently by its kernels)."""
    width = segments.shape[1]
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
    allowed = same & torch.ones(width, width, dtype=torch.bool).tril()
    allowed |= torch.eye(width, dtype=torch.bool)
    return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
        ~allowed, torch.finfo(torch.float32).min
    )[:, None]


def _batch(
    inputs: dict[str, dict[str, torch.Tensor]],
    labels: torch.Tensor,
    samples: torch.Tensor,
    *,
    keep: int | None,
    real: torch.Tensor,
) -> Batch:
    batch: Batch = {
        "inputs": inputs,
        "lm_labels": labels,  # decoders: the tokens of the last keep - 1 columns; seq2seq: the decoder's
        "lm_samples": samples,  # which example each label belongs to (-1: not scored), for per-sample means
        "num_target_tokens": int((labels != IGNORE).sum()),
        "num_tokens": int(real.sum()) + (0 if keep else int((labels != IGNORE).sum())),
        "num_positions": real.numel() + (0 if keep else labels.numel()),
    }
    if keep is not None:
        batch["lm_keep"] = keep
    return batch


def _left_padded(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    # Positions count real tokens only, as generate() derives them from the mask.
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def _right_padded(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask}
