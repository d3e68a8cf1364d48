"""The train config: one pydantic model, loaded from YAML, every field overridable from the CLI."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mtpeft.config_files import read_yaml_mapping, validate_model
from mtpeft.errors import ConfigError


class TaskEntry(BaseModel):
    """One task of a run: which task, which data, and its per-task batching."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Built-in task name or path of a task YAML.")
    data: str | None = Field(default=None, description="Data folder; defaults to the task's own `data`.")
    name: str | None = Field(default=None, description="Alias, to train one task kind on two datasets.")
    batch_size: int = Field(default=8, ge=1)
    eval_batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=256, ge=8, description="Max tokens of code (each snippet for pairs).")
    max_query_length: int = Field(default=64, ge=4, description="Max tokens of a retrieval query.")
    max_train_examples: int | None = Field(default=None, ge=1, description="Subsample train (seeded).")
    max_eval_examples: int | None = Field(default=None, ge=1, description="Subsample valid/test (seeded).")

    @property
    def label(self) -> str:
        return self.name or Path(self.task).stem


class TrainConfig(BaseModel):
    """A fully described run: with its seed, this is what the store keys on."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="run", description="Run (or group) name shown in `mtpeft runs`.")
    mode: Literal["multi", "single"] = Field(
        default="multi", description="multi: one shared module for all tasks; single: one run per task."
    )
    model: str = Field(default="minilm", description="Short name (`mtpeft models`), hub id or local folder.")
    method: str = Field(default="lora", description="PEFT method name (`mtpeft methods`) or `full`.")
    method_options: dict[str, Any] = Field(default_factory=dict, description="r, alpha, bottleneck, ...")
    pooling: Literal["cls", "mean", "last-token"] | None = Field(
        default=None, description="Sequence pooling; default per architecture."
    )
    tasks: list[TaskEntry] = Field(min_length=1)
    schedule: Literal["round-robin", "proportional", "temperature"] = "round-robin"
    temperature: float = Field(default=0.3, gt=0, description="T for `temperature` sampling (p ~ n^T).")
    loss_weighting: Literal["equal", "learned", "uncertainty"] = "equal"
    lr: float = Field(default=5e-4, gt=0, description="Learning rate of the shared module.")
    head_lr: float | None = Field(default=None, gt=0, description="Learning rate of the heads (default: lr).")
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=200, ge=1, description="Optimiser steps (each sees one batch per task).")
    eval_every: int = Field(default=50, ge=1, description="Validate every N steps.")
    save_every: int = Field(default=50, ge=1, description="Checkpoint every N steps (for --resume).")
    patience: int | None = Field(default=None, ge=1, description="Stop after N evals without improvement.")
    length_grouping: bool = Field(default=True, description="Batch similar lengths together.")
    dynamic_padding: bool = Field(default=True, description="Pad to the batch's longest, not max_length.")
    retrieval_dim: int = Field(default=256, ge=8)
    retrieval_scale: float = Field(default=20.0, gt=0, description="Similarity scale (1/temperature).")
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    workspace: str = Field(default="workspace", description="Folder holding runs/ and mtpeft.sqlite.")
    study: str | None = None
    evaluate_splits: list[str] = Field(default_factory=lambda: ["test"])
    baselines: bool = Field(default=True, description="Score majority/random/TF-IDF baselines beside.")

    @model_validator(mode="after")
    def _unique_task_labels(self) -> TrainConfig:
        labels = [t.label for t in self.tasks]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise ValueError(f"task names must be unique; give `name:` to tell apart: {sorted(dupes)}")
        return self

    def run_key(self) -> str:
        """Hash of what defines the result (the name is only a label, the workspace only a place).

        The store matches finished runs on it; kept here, torch-free, so `mtpeft study --dry-run`
        computes it without importing the trainer.
        """
        from mtpeft.store import config_hash

        data = self.hashable()
        data.pop("name", None)
        return config_hash(data)

    def hashable(self) -> dict[str, Any]:
        """The part of the config that defines the result (workspace and study do not)."""
        data = self.model_dump(mode="json")
        data.pop("workspace", None)
        data.pop("study", None)
        return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key=value` overrides (dotted keys reach nested fields; values parse as YAML scalars)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. max_steps=100)")
        key, raw = item.split("=", 1)
        try:
            _set_dotted(data, key.strip(), yaml.safe_load(raw))
        except (ValueError, IndexError) as err:
            raise ConfigError(f"cannot apply override '{item}': {err}", field=key) from err
    return data


def validate_config(data: dict[str, Any], *, path: str | Path | None = None) -> TrainConfig:
    return validate_model(TrainConfig, data, path=path)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    data = read_yaml_mapping(path, what="config file", expected="name, mode, model, method, tasks, ...")
    return validate_config(apply_overrides(data, overrides or []), path=path)


# ---- run directories are self-contained: their saved config holds absolute paths --------------------
def with_absolute_paths(config: TrainConfig, root: str | Path) -> TrainConfig:
    """The config with every relative path made absolute against `root` (where training ran).

    A run directory keeps this copy as its config.yaml, so the run evaluates from any working directory.
    Paths: each task's `data`, a task given as a YAML file, `model` where it is a local folder (not a
    short name) and `workspace`. The run's key and store hash stay those of the config as given.
    """
    root = Path(root)
    update: dict[str, Any] = {
        "tasks": [_absolute_entry(entry, root) for entry in config.tasks],
        "workspace": str(_absolute(config.workspace, root)),
    }
    if _is_local_model(config.model, root):
        update["model"] = str(_absolute(config.model, root))
    return config.model_copy(update=update)


def _absolute(path: str | Path, root: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


def _absolute_entry(entry: TaskEntry, root: Path) -> TaskEntry:
    update: dict[str, Any] = {}
    if entry.data is not None:
        update["data"] = str(_absolute(entry.data, root))
    # The same test get_task applies: a YAML name or an existing file is a path, anything else a name.
    if entry.task.endswith((".yaml", ".yml")) or (root / entry.task).is_file():
        update["task"] = str(_absolute(entry.task, root))
    return entry.model_copy(update=update)


def _is_local_model(model: str, root: Path) -> bool:
    if Path(model).is_absolute() or not (root / model).is_dir():
        return False
    # Short names win over folders when a model is loaded (models/loading.py), so they stay names.
    from mtpeft.models.registry import MODELS  # imported here: it pulls in torch

    return model not in MODELS
