"""The bottleneck tuner as a plain peft method: placement, arithmetic, peft operations."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel, get_peft_model

from mtpeft.models import load_backbone
from mtpeft.peft_methods.bottleneck import BottleneckConfig, ParallelAdapter, SerialAdapter

# peft 0.21 probes transformers 5's deprecated `is_gradient_checkpointing`; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


def tokens(backbone) -> dict[str, torch.Tensor]:
    encoded = backbone.tokenizer(["for i in range(3): print(i)", "y"], padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def randomise_adapters(model: torch.nn.Module) -> None:
    """Give the (zero-initialised) up-projections weights so the adapters actually do something."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bottleneck_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def test_serial_adapter_on_bert_wraps_the_ffn_output_not_the_attention_output() -> None:
    backbone = load_backbone("tiny-bert")
    config = BottleneckConfig(target_modules=backbone.info.ffn_output_modules, bottleneck_size=4)
    model = get_peft_model(backbone.model, config)
    wrapped = {name for name, module in model.named_modules() if isinstance(module, SerialAdapter)}
    assert wrapped == {f"base_model.model.encoder.layer.{i}.output.dense" for i in range(2)}


def test_serial_adapter_adds_the_bottleneck_of_the_projection_output() -> None:
    backbone = load_backbone("tiny-llama")
    projection = backbone.model.layers[0].mlp.down_proj
    x = torch.randn(3, projection.in_features)
    expected_base = projection(x)
    get_peft_model(backbone.model, BottleneckConfig(target_modules=["layers.0.mlp.down_proj"], scaling=0.5))
    layer = backbone.model.layers[0].mlp.down_proj
    randomise_adapters(layer)

    down, up = layer.bottleneck_down["default"], layer.bottleneck_up["default"]
    expected = expected_base + 0.5 * up(torch.relu(down(expected_base)))
    torch.testing.assert_close(layer(x), expected)


def test_parallel_adapter_on_bert_adds_to_the_ffn_output_before_layernorm() -> None:
    backbone = load_backbone("tiny-bert")
    bert_output = backbone.model.encoder.layer[0].output  # LayerNorm(dense(hidden) + input_tensor)
    hidden = torch.randn(2, 5, bert_output.dense.in_features)
    ffn_input = torch.randn(2, 5, backbone.info.hidden_size)
    config = BottleneckConfig(target_modules=backbone.info.ffn_block_modules, parallel=True, scaling=4.0)
    get_peft_model(backbone.model, config).eval()
    layer = backbone.model.encoder.layer[0].output
    assert isinstance(layer, ParallelAdapter)
    randomise_adapters(layer)

    down, up = layer.bottleneck_down["default"], layer.bottleneck_up["default"]
    adapter = 4.0 * up(torch.relu(down(ffn_input)))
    expected = bert_output.LayerNorm(bert_output.dense(hidden) + adapter + ffn_input)
    torch.testing.assert_close(layer(hidden, ffn_input), expected)


def test_parallel_adapter_on_llama_adds_beside_the_mlp() -> None:
    backbone = load_backbone("tiny-llama")
    mlp = backbone.model.layers[1].mlp
    x = torch.randn(2, 4, backbone.info.hidden_size)
    expected_mlp = mlp(x)
    get_peft_model(
        backbone.model, BottleneckConfig(target_modules=["layers.1.mlp"], parallel=True, scaling=2.0)
    )
    layer = backbone.model.layers[1].mlp
    randomise_adapters(layer)

    down, up = layer.bottleneck_down["default"], layer.bottleneck_up["default"]
    torch.testing.assert_close(layer(x), expected_mlp + 2.0 * up(torch.relu(down(x))))


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
def test_disable_adapter_and_unload_give_back_the_backbone(model: str) -> None:
    reference = load_backbone(model)
    inputs = tokens(reference)
    expected = reference.model(**inputs).last_hidden_state
    backbone = load_backbone(model)
    config = BottleneckConfig(target_modules=backbone.info.ffn_output_modules, bottleneck_size=8)
    peft_model = get_peft_model(backbone.model, config).eval()
    randomise_adapters(peft_model)
    assert not torch.allclose(peft_model(**inputs).last_hidden_state, expected)

    with peft_model.disable_adapter():
        torch.testing.assert_close(peft_model(**inputs).last_hidden_state, expected)
    torch.testing.assert_close(peft_model.unload()(**inputs).last_hidden_state, expected)


def test_merging_is_refused_with_a_reason() -> None:
    backbone = load_backbone("tiny-bert")
    config = BottleneckConfig(target_modules=backbone.info.ffn_output_modules)
    with pytest.raises(ValueError, match="non-linear and cannot be merged"):
        get_peft_model(backbone.model, config).merge_and_unload()


def test_saved_config_round_trips_through_peft(tmp_path) -> None:
    backbone = load_backbone("tiny-llama")
    config = BottleneckConfig(
        target_modules=backbone.info.ffn_block_modules,
        parallel=True,
        bottleneck_size=16,
        non_linearity="gelu",
    )
    get_peft_model(backbone.model, config).save_pretrained(str(tmp_path))
    reloaded = PeftModel.from_pretrained(load_backbone("tiny-llama").model, str(tmp_path))
    loaded = reloaded.peft_config["default"]
    assert isinstance(loaded, BottleneckConfig)
    assert (loaded.parallel, loaded.bottleneck_size, loaded.non_linearity) == (True, 16, "gelu")
    assert set(loaded.target_modules) == set(backbone.info.ffn_block_modules)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bottleneck_size", 0, "positive"),
        ("non_linearity", "nope", "unknown non_linearity"),
        ("dropout", 1.5, "dropout must be in"),
    ],
)
def test_config_validates_its_fields(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BottleneckConfig(target_modules=["x"], **{field: value})
