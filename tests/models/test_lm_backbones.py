"""Backbones with a language-model head: decoders (tiny-llama) and encoder-decoders (a tiny T5)."""

from __future__ import annotations

import pytest
import torch

from mtpeft.errors import ModelLoadError
from mtpeft.models import load_backbone
from mtpeft.peft_methods import apply_method
from tiny_t5 import tiny_t5_folder

TEXTS = ["def add(a, b):\n    return a + b", "x = 1"]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> str:
    return tiny_t5_folder(tmp_path_factory.mktemp("models"))


def _tokens(backbone) -> dict[str, torch.Tensor]:
    encoded = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def test_a_decoder_loads_with_its_lm_head_only_when_asked():
    bare, with_head = load_backbone("tiny-llama"), load_backbone("tiny-llama", lm_head=True)
    assert (bare.info.lm_head, type(bare.model).__name__) == (None, "LlamaModel")
    assert (with_head.info.lm_head, type(with_head.model).__name__) == ("causal", "LlamaForCausalLM")
    assert with_head.info.peft_task_type == "CAUSAL_LM" and bare.info.peft_task_type == "FEATURE_EXTRACTION"


def test_pooled_heads_read_the_decoders_last_layer_through_the_lm_head_model():
    backbone = load_backbone("tiny-llama", lm_head=True)
    inputs = _tokens(backbone)
    adapted = apply_method(backbone, "lora").eval()
    with torch.no_grad():
        hidden = adapted(**inputs)
        expected = backbone.model.model(**inputs).last_hidden_state  # the decoder stack, no LM head
    torch.testing.assert_close(hidden, expected)


def test_an_encoder_with_an_lm_head_is_refused_with_what_to_use():
    with pytest.raises(ModelLoadError, match="tiny-bert' is an encoder.*decoder such as smollm2-135m"):
        load_backbone("tiny-bert", lm_head=True)


def test_an_encoder_decoder_describes_itself_and_its_heads_read_the_encoder(t5_folder):
    backbone = load_backbone(t5_folder)  # always with its LM head: its bare model needs decoder inputs
    info = backbone.info
    assert (info.architecture, info.lm_head, info.default_pooling) == ("encoder-decoder", "seq2seq", "mean")
    assert info.lora_targets == ["q", "v"]
    # Adapters go into both stacks: 2 encoder FFNs + 2 decoder FFNs; self- and cross-attention outputs.
    assert len(info.ffn_output_modules) == 4 and len(info.attention_output_modules) == 6
    assert any(m.startswith("decoder.") for m in info.ffn_block_modules)
    inputs = _tokens(backbone)
    adapted = apply_method(backbone, "lora").eval()
    with torch.no_grad():
        hidden = adapted(**inputs)
        expected = backbone.model.get_encoder()(**inputs).last_hidden_state
    torch.testing.assert_close(hidden, expected)
