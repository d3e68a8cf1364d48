"""Loading backbones: the shipped short names, local folders, and failing clearly without a hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, LlamaConfig

from mtpeft.errors import ModelLoadError
from mtpeft.models import MODELS, load_backbone, resolve_tokenizer_path
from mtpeft.models.architectures import detect_architecture
from mtpeft.models.registry import minilm_folder, smollm2_cache_folder


def hidden_states(backbone, texts: list[str]) -> torch.Tensor:
    encoded = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return backbone.model(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
        ).last_hidden_state


@pytest.mark.parametrize(
    ("name", "architecture", "pooling", "lora_targets", "ffn_output"),
    [
        ("tiny-bert", "encoder", "cls", ["query", "value"], "encoder.layer.1.output.dense"),
        ("tiny-llama", "decoder", "mean", ["q_proj", "v_proj"], "layers.1.mlp.down_proj"),
    ],
)
def test_tiny_models_describe_themselves(name, architecture, pooling, lora_targets, ffn_output) -> None:
    backbone = load_backbone(name)
    info = backbone.info
    assert (info.name, info.architecture, info.default_pooling) == (name, architecture, pooling)
    assert (info.hidden_size, info.num_layers) == (32, 2)
    assert info.num_parameters == sum(p.numel() for p in backbone.model.parameters())
    assert info.lora_targets == lora_targets
    assert ffn_output in info.ffn_output_modules and len(info.ffn_output_modules) == 2
    assert not any("attention" in module for module in info.ffn_output_modules)
    # the minilm BERT tokenizer drives both, so vocab and pad ids agree with the model
    assert backbone.model.config.vocab_size == len(backbone.tokenizer) == 30522
    assert backbone.model.config.pad_token_id == backbone.tokenizer.pad_token_id is not None
    assert backbone.tokenizer.padding_side == "right"
    assert hidden_states(backbone, ["a b c", "a"]).shape[-1] == 32


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_tiny_models_are_seeded_and_fast_after_the_first_build(name: str) -> None:
    load_backbone(name)  # the first call loads and caches the tokenizer
    started = time.perf_counter()
    first = load_backbone(name, seed=1)
    assert time.perf_counter() - started < 1.0
    again = load_backbone(name, seed=1)
    other = load_backbone(name, seed=2)
    texts = ["x = 1", "return y"]
    torch.testing.assert_close(hidden_states(first, texts), hidden_states(again, texts))
    assert not torch.allclose(hidden_states(first, texts), hidden_states(other, texts))


def test_loading_does_not_disturb_the_callers_random_state() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_backbone("tiny-llama", seed=7)
    torch.testing.assert_close(torch.rand(3), expected)


def test_tokenizers_are_independent_copies() -> None:
    first = load_backbone("tiny-bert")
    first.tokenizer.padding_side = "left"
    assert load_backbone("tiny-bert").tokenizer.padding_side == "right"


def test_dtype_is_applied() -> None:
    backbone = load_backbone("tiny-llama", dtype=torch.bfloat16)
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}


def test_a_saved_local_folder_loads_like_the_original(tmp_path: Path) -> None:
    original = load_backbone("tiny-llama", seed=5)
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path))
    assert loaded.info.architecture == "decoder" and str(tmp_path.resolve()) in loaded.info.source
    texts = ["def f(): pass", "x"]
    torch.testing.assert_close(hidden_states(loaded, texts), hidden_states(original, texts))


def test_a_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a loadable Hugging Face model"):
        load_backbone(str(tmp_path))


def test_unknown_model_offline_fails_fast_and_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        load_backbone("someone/not-a-cached-model")
    assert time.perf_counter() - started < 5.0
    message = str(error.value)
    for expected in ("not cached locally", "hub is unreachable", "HF_HUB_OFFLINE"):
        assert expected in message
    assert "local folder" in message and "mtpeft models" in message  # what to do instead


def test_unknown_model_with_unreachable_hub_fails_fast(monkeypatch) -> None:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot connect to 127.0.0.1:9"):
        load_backbone("someone/not-a-cached-model")
    assert time.perf_counter() - started < 5.0


def test_architecture_falls_back_for_families_not_in_the_table() -> None:
    assert detect_architecture(GPT2Config(architectures=["GPT2LMHeadModel"])) == "decoder"
    assert detect_architecture(LlamaConfig()) == "decoder"
    from transformers import DistilBertConfig

    assert detect_architecture(DistilBertConfig(architectures=["DistilBertModel"])) == "encoder"


def test_registry_names_and_tokenizer_paths() -> None:
    assert {"minilm", "smollm2-135m", "tiny-bert", "tiny-llama"} <= set(MODELS)
    assert resolve_tokenizer_path("tiny-llama") == resolve_tokenizer_path("minilm") == minilm_folder()
    assert resolve_tokenizer_path("org/some-model") == "org/some-model"


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_listed_parameter_count_matches_the_loaded_model(name: str) -> None:
    assert MODELS[name].parameter_count() == load_backbone(name).info.num_parameters


@pytest.mark.real_model
def test_minilm_is_a_small_bert_encoder() -> None:
    backbone = load_backbone("minilm")
    info = backbone.info
    assert (info.architecture, info.model_type, info.default_pooling) == ("encoder", "bert", "cls")
    assert (info.hidden_size, info.num_layers) == (384, 6)
    assert info.num_parameters == 22_713_216
    assert MODELS["minilm"].parameter_count() == info.num_parameters  # from the safetensors header
    assert hidden_states(backbone, ["def add(a, b): return a + b"]).shape[-1] == 384


@pytest.mark.real_model
def test_smollm2_gguf_is_converted_once_then_loaded_from_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MTPEFT_CACHE", str(tmp_path))
    cache = smollm2_cache_folder()
    assert cache == tmp_path / "models" / "smollm2-135m"
    listed = MODELS["smollm2-135m"].parameter_count()  # from the GGUF header, without converting
    assert not cache.exists()

    started = time.perf_counter()
    backbone = load_backbone("smollm2-135m")
    converted_s = time.perf_counter() - started
    print(f"\nsmollm2-135m: GGUF -> fp32 cache {converted_s:.1f} s")
    assert converted_s < 90, "conversion took over 90 s; tell the lead"
    config = json.loads((cache / "config.json").read_text())
    assert "quantization_config" not in config  # the HF Trainer refuses GGUF-quantised models
    assert (cache / "tokenizer.json").is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    info = backbone.info
    assert (info.architecture, info.model_type, info.default_pooling) == ("decoder", "llama", "mean")
    assert (info.hidden_size, info.num_layers) == (576, 30)
    assert info.num_parameters == listed == 134_515_008
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}
    assert backbone.tokenizer.pad_token is not None and backbone.tokenizer.padding_side == "right"

    started = time.perf_counter()
    cached = load_backbone("smollm2-135m")
    cached_s = time.perf_counter() - started
    print(f"smollm2-135m: cached load {cached_s:.1f} s")
    assert cached_s < converted_s / 3
    texts = ["def add(a, b):\n    return a + b"]
    torch.testing.assert_close(hidden_states(cached, texts), hidden_states(backbone, texts))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama"])
def test_backbones_attend_with_pytorchs_scaled_dot_product_attention(name):
    # The speed of training on CPU rests on it: with dropout 0 it takes the fused kernel instead of
    # materialising every T x T attention matrix (README, Training speed).
    assert load_backbone(name).model.config._attn_implementation == "sdpa"
