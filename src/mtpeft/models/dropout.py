"""Setting a backbone's own dropout (hidden states and attention probabilities) for training.

Why a knob: with attention dropout on, PyTorch's CPU `scaled_dot_product_attention` cannot use its fused
kernel and materialises every T x T probability matrix plus a random mask; measured here (minilm, LoRA,
batch 8) that costs 40% of a training step at 128 tokens and 70% at 512 (benchmarks/peer_compare.py).
With the backbone frozen (PEFT) its dropout is only noise on the features the module learns from, so a
user may trade it for speed; the default keeps the model's own values, as its authors trained it.
"""

from __future__ import annotations

from torch import nn

# Float attributes that attention classes read at forward time instead of an nn.Dropout module
# (e.g. Llama's `attention_dropout`), and config fields architectures build their dropout from.
_FLOAT_ATTRIBUTES = ("attention_dropout", "dropout_prob")
_CONFIG_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "dropout_rate",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def set_backbone_dropout(model: nn.Module, p: float) -> int:
    """Every dropout inside `model` (apply before a PEFT method adds its own) to `p`; how many were set."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            changed += 1
        for name in _FLOAT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, p)
                changed += 1
    config = getattr(model, "config", None)
    for name in _CONFIG_FIELDS:
        if isinstance(getattr(config, name, None), float):
            setattr(config, name, p)
    return changed
