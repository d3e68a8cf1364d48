"""What the model does for a task trained through its language-model head (formulation instruct).

The same backbone, through its own LM head instead of a pooled head; batches from modeling/lm_inputs.py:

- training: the loss of the target tokens only (`loss`), averaged as the run's token loss says;
- evaluation of a labelled task (`choose`): the answer word with the highest log-likelihood after the
  prompt, from one forward pass over every (example, answer word) row; `y_pred` is its label index, so
  the kind's scoring is the one its heads formulation uses;
- evaluation of a generation task (`generate_texts`): transformers' generate, greedy or beam, bounded by
  the task's `max_target_length`, decoded up to the end token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mtpeft.modeling.lm_inputs import IGNORE, end_token_id

if TYPE_CHECKING:
    from mtpeft.config import TaskEntry
    from mtpeft.modeling.inputs import Batch


def token_nll(backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of each label token [rows, K] (0 where not scored), and the scored mask."""
    labels = batch["lm_labels"]
    logits = _logits(backbone, batch)
    nll = nn.functional.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="none"
    )
    return nll.view_as(labels), labels != IGNORE


def _logits(backbone: nn.Module, batch: Batch) -> torch.Tensor:
    inputs = dict(batch["inputs"]["lm"])
    if "lm_keep" not in batch:  # encoder-decoder: the decoder reads the target shifted right
        labels = batch["lm_labels"]
        inputs["decoder_input_ids"] = _shift_right(labels, backbone.transformer.config)
        inputs["decoder_attention_mask"] = (labels != IGNORE).long()
        return backbone.lm_forward(**inputs).logits
    if backbone.is_prompt_learning:  # peft ignores position ids after its virtual tokens (and warns)
        inputs.pop("position_ids", None)
    keep = batch["lm_keep"]
    # Column c predicts token c + 1: the last `keep` columns give the logits of the last keep - 1 tokens.
    return backbone.lm_forward(**inputs, logits_to_keep=keep).logits[:, -keep:-1]


def _shift_right(labels: torch.Tensor, config: Any) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the start token, then the target up to its last token."""
    shifted = labels.new_full(labels.shape, config.pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = config.decoder_start_token_id
    return shifted.masked_fill(shifted == IGNORE, config.pad_token_id)


def loss(backbone: nn.Module, batch: Batch, token_loss: Any | None) -> torch.Tensor:
    """The loss of the target tokens: the run's token loss (training/token_loss.py), else their mean."""
    nll, mask = token_nll(backbone, batch)
    if token_loss is not None:
        return token_loss.reduce(nll, mask, batch["lm_samples"], batch)
    return nll.sum() / mask.sum().clamp(min=1)


def choose(backbone: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """The answer word of highest likelihood (the summed log-probabilities of its tokens, end included, so
    a word that is the prefix of another is not favoured) per example; probabilities over the words."""
    nll, _ = token_nll(backbone, batch)
    scores = -nll.sum(-1).view(-1, batch["num_choices"])
    return {"y_pred": scores.argmax(-1), "probs": scores.softmax(-1)}


def generate_texts(
    backbone: nn.Module,
    tokenizer: Any,
    batch: Batch,
    entry: TaskEntry,
    *,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
) -> list[str]:
    """One generated text per prompt row of `batch` (greedy, or beam search with `num_beams` > 1)."""
    from transformers import GenerationConfig

    inputs = dict(batch["inputs"]["lm"])
    inputs.pop("position_ids", None)  # generate derives them from the mask, step by step
    end = end_token_id(tokenizer)
    config = backbone.transformer.config
    settings = GenerationConfig(
        max_new_tokens=max_new_tokens or entry.max_target_length,
        num_beams=num_beams or entry.num_beams,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=end,
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
    )
    out = backbone.generate(**inputs, generation_config=settings)
    # A decoder returns prompt + continuation; an encoder-decoder the decoder's tokens (start first).
    produced = out if backbone.info.lm_head == "seq2seq" else out[:, inputs["input_ids"].shape[1] :]
    texts = []
    for row in produced.tolist():
        stop = row.index(end) if end in row else len(row)
        texts.append(tokenizer.decode(row[:stop], skip_special_tokens=True).strip())
    return texts
