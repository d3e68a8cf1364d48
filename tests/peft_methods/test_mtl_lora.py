"""MTL-LoRA's defining properties (the common checks are in test_peft_methods.py's case table).

Shared A, a task's own transform, a task-weighted mix of shared up-projections: with identical transforms
and up-projections it is LoRA; its tasks part ways only through training; each task's batch trains the
shared parts and only its own task parts; saved and reloaded, each task's output is unchanged; and a run
trained with it answers each task through that task's module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mtpeft
from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.models import load_backbone
from mtpeft.peft_methods import AdaptedBackbone, apply_method, load_method, task_context
from mtpeft.peft_methods.mtl_lora import MtlLoraLayer
from mtpeft.training.run import run_training

MODELS = ["tiny-bert", "tiny-llama"]
TASKS = ["a", "b"]


def batch(backbone) -> dict[str, torch.Tensor]:
    encoded = backbone.tokenizer(
        ["def add(a, b):\n    return a + b", "x = 1"], padding=True, return_tensors="pt"
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@torch.no_grad()
def outputs(adapted: AdaptedBackbone, inputs: dict[str, torch.Tensor], task: str) -> torch.Tensor:
    adapted.eval()
    with task_context(task):
        return adapted(**inputs)


def mtl_layers(adapted: AdaptedBackbone) -> dict[str, MtlLoraLayer]:
    return {n: m for n, m in adapted.base_model.named_modules() if isinstance(m, MtlLoraLayer)}


def train_tasks(adapted: AdaptedBackbone, inputs: dict[str, torch.Tensor], steps: int = 3) -> None:
    """Task a regresses onto a random target, task b onto its negation: they must part ways."""
    adapted.train()
    optimiser = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    target = torch.randn(
        (*inputs["input_ids"].shape, adapted.info.hidden_size), generator=torch.Generator().manual_seed(0)
    )
    for _ in range(steps):
        for task, sign in zip(TASKS, (1, -1), strict=True):
            with task_context(task):
                loss = (adapted(**inputs) - sign * target).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


@pytest.mark.parametrize("model", MODELS)
def test_with_identity_transforms_and_equal_up_projections_it_is_lora_of_the_same_rank(model: str) -> None:
    options = {"r": 4, "alpha": 8, "dropout": 0.0}
    lora = apply_method(load_backbone(model, seed=3), "lora", options)
    mtl = apply_method(load_backbone(model, seed=3), "mtl-lora", options | {"up_projections": 3}, tasks=TASKS)
    lora_layers = dict(lora.base_model.named_modules())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in mtl_layers(mtl).items():
            source = lora_layers[name]
            b = torch.randn(source.lora_B["default"].weight.shape, generator=generator)
            source.lora_B["default"].weight.copy_(b)  # LoRA's B is zero at start: make the update visible
            layer.mtl_lora_A["default"].copy_(source.lora_A["default"].weight)
            layer.mtl_lora_B["default"].copy_(b.expand_as(layer.mtl_lora_B["default"]))  # B_1 = B_2 = B_3 = B
    inputs = batch(load_backbone(model))
    expected = outputs(lora, inputs, "a")
    assert not torch.allclose(
        expected, outputs(apply_method(load_backbone(model, seed=3), "lora"), inputs, "a")
    )
    for task in TASKS:  # transforms are the identity at start; any mixing of equal B_i is B
        torch.testing.assert_close(outputs(mtl, inputs, task), expected)


@pytest.mark.parametrize("model", MODELS)
def test_tasks_start_as_one_model_and_differ_after_training(model: str) -> None:
    backbone = load_backbone(model, seed=3)
    inputs = batch(backbone)
    adapted = apply_method(backbone, "mtl-lora", tasks=TASKS)
    torch.testing.assert_close(outputs(adapted, inputs, "a"), outputs(adapted, inputs, "b"))
    train_tasks(adapted, inputs)
    assert not torch.allclose(outputs(adapted, inputs, "a"), outputs(adapted, inputs, "b"), atol=1e-4)


def test_a_tasks_batch_trains_the_shared_parts_and_only_its_own_task_parts() -> None:
    backbone = load_backbone("tiny-bert", seed=3)
    inputs = batch(backbone)
    adapted = apply_method(backbone, "mtl-lora", {"dropout": 0.0}, tasks=TASKS)
    train_tasks(
        adapted, inputs, steps=1
    )  # B is zero at start: one step so A, transforms and mixing get gradients
    adapted.zero_grad()
    with task_context("b"):
        adapted(**inputs).pow(2).mean().backward()
    for layer in mtl_layers(adapted).values():
        assert layer.mtl_lora_A["default"].grad.abs().sum() > 0
        assert layer.mtl_lora_B["default"].grad.abs().sum() > 0
        for part in (layer.mtl_lora_transform["default"], layer.mtl_lora_mixing["default"]):
            assert part.grad[TASKS.index("a")].abs().sum() == 0  # task a's own parts: untouched by b
            assert part.grad[TASKS.index("b")].abs().sum() > 0


@pytest.mark.parametrize("model", MODELS)
def test_save_and_reload_gives_each_task_its_own_outputs(model: str, tmp_path: Path) -> None:
    backbone = load_backbone(model, seed=3)
    inputs = batch(backbone)
    adapted = apply_method(backbone, "mtl-lora", {"diagonal": model == "tiny-llama"}, tasks=TASKS)
    train_tasks(adapted, inputs)
    expected = {task: outputs(adapted, inputs, task) for task in TASKS}
    adapted.save(tmp_path)
    reloaded = load_method(load_backbone(model, seed=3), tmp_path)
    assert reloaded.options["tasks"] == TASKS
    for task in TASKS:
        torch.testing.assert_close(outputs(reloaded, inputs, task), expected[task])


def test_without_a_task_or_with_an_unknown_one_the_error_says_what_to_do() -> None:
    backbone = load_backbone("tiny-bert")
    adapted = apply_method(backbone, "mtl-lora", tasks=TASKS)
    with pytest.raises(RuntimeError, match=r"one transform per task \(a, b\).*task_context"):
        adapted(**batch(backbone))
    with pytest.raises(ValueError, match="trained for tasks a, b, not 'c'"):
        outputs(adapted, batch(backbone), "c")


def test_gradient_checkpointing_recomputes_each_layer_for_the_same_task() -> None:
    """The recomputation runs inside backward, outside the forward's task_context."""
    grads = []
    for checkpointing in (False, True):
        backbone = load_backbone("tiny-bert", seed=3)
        adapted = apply_method(backbone, "mtl-lora", {"dropout": 0.0}, tasks=TASKS)
        train_tasks(adapted, batch(backbone), steps=1)
        if checkpointing:
            adapted.gradient_checkpointing_enable()
        adapted.train()
        adapted.zero_grad()
        with task_context("b"):
            adapted(**batch(backbone)).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in adapted.parameters() if p.requires_grad])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, plain)


def test_a_trained_run_answers_each_task_through_its_own_module(tmp_path: Path) -> None:
    """analyze() encodes a snippet once per task with MTL-LoRA, so it gives what evaluation gives."""
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", tmp_path / "data", n_per_split=16),
        "flaky": write_fixture_dataset("flakeflagger-json", tmp_path / "data", n_per_split=16),
    }
    config = {
        "name": "mtl",
        "model": "tiny-bert",
        "method": "mtl-lora",
        "lr": 1e-2,
        "tasks": [{"task": t, "data": str(p), "batch_size": 8, "max_length": 64} for t, p in data.items()],
        "max_steps": 4,
        "eval_every": 4,
        "workspace": str(tmp_path / "ws"),
        "evaluate_splits": [],
        "baselines": False,
    }
    result = run_training(validate_config(config), progress=False)[0]
    run = mtpeft.load(result.run_dir)
    assert run.model.task_conditioned
    code = "int f(char *s) { char b[8]; strcpy(b, s); return 0; }"
    encoded = run.tokenizer([code], return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    with torch.no_grad():
        pooled = {task: run.model.encode(ids, mask, task=task) for task in data}
    assert not torch.allclose(pooled["vulnerability"], pooled["flaky"])
    answers = run.analyze(code)
    for task in data:
        head = run.model.heads[task]
        with torch.no_grad():
            expected = head.predict({head.inputs[0]: pooled[task]})["probs"][0]
        assert answers[task]["probability"] == pytest.approx(float(expected.max()), abs=1e-6)
