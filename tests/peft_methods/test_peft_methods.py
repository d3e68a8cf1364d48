"""Every fine-tuning method x {encoder, decoder}, through the one `apply_method` code path.

Modelled on peft's tests/testing_common.py: one table of cases, the same behavioural checks for each.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mtpeft.errors import ConfigError
from mtpeft.models import load_backbone
from mtpeft.peft_methods import PEFT_METHODS, AdaptedBackbone, apply_method, get_method, load_method

MODELS = ["tiny-bert", "tiny-llama"]
METHODS = ["lora", "dora", "ia3", "prefix", "prompt", "adapter", "parallel-adapter", "mtl-lora", "full"]

# What the trainable parameters of each method are called (full: everything).
TRAINABLE_MARKER = {
    "lora": "lora_",
    "dora": "lora_",
    "ia3": "ia3_l",
    "prefix": "prompt_encoder",
    "prompt": "prompt_encoder",
    "adapter": "bottleneck_",
    "parallel-adapter": "bottleneck_",
    "mtl-lora": "mtl_lora_",
    "full": "",
}
# Methods whose initialisation leaves the backbone's function unchanged (zero / identity init).
STARTS_AS_BACKBONE = {"lora", "dora", "ia3", "adapter", "parallel-adapter", "mtl-lora", "full"}
# peft refuses to make a reloaded prompt/prefix trainable; those reload frozen (documented).
RELOADS_FROZEN = {"prefix", "prompt"}

CASES = [(method, model) for method in METHODS for model in MODELS]
CASE_IDS = [f"{method}-{model}" for method, model in CASES]


def batch(backbone) -> dict[str, torch.Tensor]:
    texts = ["def add(a, b):\n    return a + b", "x = 1"]
    encoded = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def train_steps(adapted: AdaptedBackbone, inputs: dict[str, torch.Tensor], steps: int = 3) -> None:
    adapted.train()
    optimiser = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    # Regress onto a fixed random target (|h|^2 would be constant after BERT's final LayerNorm).
    shape = (*inputs["input_ids"].shape, adapted.info.hidden_size)
    target = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        loss = (adapted(**inputs) - target).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    adapted.eval()


@torch.no_grad()
def outputs(module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    module.eval()
    return module(**inputs)


def test_every_method_is_registered() -> None:
    assert set(METHODS) <= set(PEFT_METHODS)


@pytest.mark.parametrize(("method", "model"), CASES, ids=CASE_IDS)
def test_training_changes_output_and_only_method_parameters_train(method: str, model: str) -> None:
    backbone = load_backbone(model)
    inputs = batch(backbone)
    adapted = apply_method(backbone, method)

    before = outputs(adapted, inputs)
    assert before.shape == (*inputs["input_ids"].shape, backbone.info.hidden_size)
    train_steps(adapted, inputs)
    assert not torch.allclose(before, outputs(adapted, inputs))

    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(TRAINABLE_MARKER[method] in name for name in trainable)
    if method == "full":
        assert adapted.trainable_parameters() == adapted.total_parameters() == backbone.info.num_parameters
    else:
        assert 0 < adapted.trainable_parameters() < adapted.total_parameters() / 10


@pytest.mark.parametrize(("method", "model"), CASES, ids=CASE_IDS)
def test_save_then_load_on_fresh_backbone_reproduces_outputs(method: str, model: str, tmp_path: Path) -> None:
    backbone = load_backbone(model, seed=3)
    inputs = batch(backbone)
    adapted = apply_method(backbone, method)
    train_steps(adapted, inputs)  # so the saved weights are not just their initial values
    expected = outputs(adapted, inputs)

    adapted.save(tmp_path)
    written = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert adapted.stored_bytes() == written

    reloaded = get_method(method).load(load_backbone(model, seed=3), tmp_path)
    torch.testing.assert_close(outputs(reloaded, inputs), expected)
    assert reloaded.method == method and reloaded.options == adapted.options
    if method in RELOADS_FROZEN:
        assert reloaded.trainable_parameters() == 0
    else:
        assert reloaded.trainable_parameters() == adapted.trainable_parameters()
    # load_method finds the method from the folder itself
    torch.testing.assert_close(outputs(load_method(load_backbone(model, seed=3), tmp_path), inputs), expected)


@pytest.mark.parametrize(("method", "model"), CASES, ids=CASE_IDS)
def test_hidden_states_of_a_row_do_not_depend_on_padding(method: str, model: str) -> None:
    """Virtual tokens are stripped and masks extended correctly: row 2 alone == row 2 in a padded batch."""
    backbone = load_backbone(model)
    padded = batch(backbone)
    adapted = apply_method(backbone, method)
    train_steps(adapted, padded, steps=1)

    length = int(padded["attention_mask"][1].sum())
    alone = {key: value[1:2, :length] for key, value in padded.items()}
    torch.testing.assert_close(outputs(adapted, padded)[1:2, :length], outputs(adapted, alone))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", sorted(STARTS_AS_BACKBONE))
def test_method_starts_from_the_backbone(method: str, model: str) -> None:
    reference = load_backbone(model)
    inputs = batch(reference)
    expected = reference.model(**inputs).last_hidden_state.detach()
    adapted = apply_method(load_backbone(model), method)
    torch.testing.assert_close(outputs(adapted, inputs), expected)


@pytest.mark.parametrize("model", MODELS)
def test_options_change_the_module(model: str) -> None:
    small = apply_method(load_backbone(model), "lora", {"r": 2})
    large = apply_method(load_backbone(model), "lora", {"r": 16, "target_modules": small.info.lora_targets})
    assert large.trainable_parameters() == 8 * small.trainable_parameters()
    pfeiffer = apply_method(load_backbone(model), "adapter", {"placement": "pfeiffer", "bottleneck": 8})
    houlsby = apply_method(load_backbone(model), "adapter", {"bottleneck": 8})
    assert houlsby.trainable_parameters() == 2 * pfeiffer.trainable_parameters()


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown PEFT method 'loar'.*lora.*parallel-adapter"):
        apply_method(load_backbone("tiny-bert"), "loar")


def test_unknown_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="'rank' is not an option of PEFT method 'lora'.*alpha.*r,"):
        apply_method(load_backbone("tiny-bert"), "lora", {"rank": 4})


def test_option_of_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match="field 'bottleneck'.*must be int, got '64'"):
        apply_method(load_backbone("tiny-bert"), "adapter", {"bottleneck": "64"})


def test_unknown_adapter_placement_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="placement 'middle'.*houlsby, pfeiffer"):
        apply_method(load_backbone("tiny-llama"), "adapter", {"placement": "middle"})


def test_target_module_missing_from_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lora.*tiny-llama.*query"):
        apply_method(load_backbone("tiny-llama"), "lora", {"target_modules": ["query"]})


def test_invalid_value_rejected_by_peft_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="non_linearity 'sparkle'"):
        apply_method(load_backbone("tiny-bert"), "adapter", {"non_linearity": "sparkle"})


def test_load_from_a_folder_without_a_saved_module_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no saved mtpeft module"):
        load_method(load_backbone("tiny-bert"), tmp_path)


@pytest.mark.parametrize("model", MODELS)
def test_gradient_checkpointing_is_off_by_default_and_trains_when_on(model: str) -> None:
    backbone = load_backbone(model)
    inputs = batch(backbone)
    adapted = apply_method(backbone, "lora")
    assert not adapted.is_gradient_checkpointing
    adapted.gradient_checkpointing_enable()
    assert adapted.is_gradient_checkpointing
    before = outputs(adapted, inputs)
    train_steps(adapted, inputs)
    assert not torch.allclose(before, outputs(adapted, inputs))
    adapted.gradient_checkpointing_disable()
    assert not adapted.is_gradient_checkpointing


def test_saved_lora_and_adapters_load_with_plain_peft_in_a_fresh_process(tmp_path: Path) -> None:
    """What a deployment does: only `peft` + `import mtpeft.peft_methods` to register the tuners."""
    cases = [
        ("lora", "tiny-bert"),
        ("adapter", "tiny-bert"),
        ("adapter", "tiny-llama"),
        ("parallel-adapter", "tiny-bert"),
        ("parallel-adapter", "tiny-llama"),
        ("mtl-lora", "tiny-bert"),
    ]
    for method, model in cases:
        backbone = load_backbone(model)
        inputs = batch(backbone)
        adapted = apply_method(backbone, method)
        train_steps(adapted, inputs)
        folder = tmp_path / f"{method}-{model}"
        adapted.save(folder)
        torch.save({"inputs": inputs, "expected": outputs(adapted, inputs)}, folder / "check.pt")

    script = textwrap.dedent(
        f"""
        import sys, torch
        from peft import PeftModel
        import mtpeft.peft_methods  # registers the bottleneck tuner with peft
        from mtpeft.models import load_backbone

        for method, model in {cases!r}:
            folder = {str(tmp_path)!r} + f"/{{method}}-{{model}}"
            check = torch.load(folder + "/check.pt")
            peft_model = PeftModel.from_pretrained(load_backbone(model).model, folder).eval()
            with torch.no_grad():
                hidden = peft_model(**check["inputs"]).last_hidden_state
            torch.testing.assert_close(hidden, check["expected"])
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_the_torch_free_catalogue_lists_exactly_the_registered_methods() -> None:
    from mtpeft.catalogue import METHOD_DESCRIPTIONS

    assert {name: m.description for name, m in PEFT_METHODS.items()} == METHOD_DESCRIPTIONS
