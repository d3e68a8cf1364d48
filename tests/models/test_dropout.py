"""backbone_dropout: the backbone's own dropout set for training, the PEFT module's own left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtpeft.config import TrainConfig, validate_config
from mtpeft.errors import ConfigError
from mtpeft.modeling.build import build_model
from mtpeft.models import load_backbone
from mtpeft.models.dropout import set_backbone_dropout
from mtpeft.tasks.spec import TaskKind, TaskSpec

TASKS = {
    "vulnerability": TaskSpec(
        name="vulnerability", kind=TaskKind.BINARY, format="jsonl", labels=["0", "1"], metrics=["accuracy"]
    )
}


def _train_mode_outputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    model.train()
    ids = torch.randint(5, 90, (2, 12))
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state


def test_zero_dropout_makes_training_passes_repeatable():
    model = load_backbone("tiny-bert").model
    first, second = _train_mode_outputs(model)
    assert not torch.equal(first, second)  # the model's own dropout is on in training
    assert set_backbone_dropout(model, 0.0) > 0
    first, second = _train_mode_outputs(model)
    assert torch.equal(first, second)
    assert model.config.attention_probs_dropout_prob == 0.0 and model.config.hidden_dropout_prob == 0.0


def _dropouts(model: nn.Module) -> dict[str, float]:
    return {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}


def test_a_run_sets_the_backbones_dropout_and_keeps_the_methods_own():
    config = TrainConfig(
        model="tiny-bert",
        method_options={"dropout": 0.1},
        tasks=[{"task": "vulnerability"}],
        backbone_dropout=0.0,
    )
    dropouts = _dropouts(build_model(config, TASKS).backbone.model)
    lora = {name: p for name, p in dropouts.items() if "lora_dropout" in name}
    assert lora and set(lora.values()) == {0.1}
    assert {p for name, p in dropouts.items() if name not in lora} == {0.0}


def test_by_default_the_models_own_dropout_is_kept():
    own = _dropouts(load_backbone("tiny-bert").model)
    built = build_model(TrainConfig(model="tiny-bert", tasks=[{"task": "vulnerability"}]), TASKS)
    after = {name: p for name, p in _dropouts(built.backbone.model).items() if "lora_dropout" not in name}
    assert set(after.values()) == set(own.values()) and max(own.values()) > 0


def test_backbone_dropout_is_checked_and_leaves_old_run_keys_alone():
    tasks = [{"task": "vulnerability"}]
    with pytest.raises(ConfigError) as err:
        validate_config({"tasks": tasks, "backbone_dropout": 1.0})
    assert err.value.field == "backbone_dropout"
    # A config that does not set it keeps the run key it had before the field existed.
    assert TrainConfig(tasks=tasks).run_key() == TrainConfig(tasks=tasks, backbone_dropout=None).run_key()
    assert TrainConfig(tasks=tasks).run_key() != TrainConfig(tasks=tasks, backbone_dropout=0.0).run_key()
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        set_backbone_dropout(nn.Dropout(0.1), 1.5)
