"""The train config: one pydantic model, loaded from YAML, every field overridable from the CLI."""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtpeft.config_files import Workspace, load_yaml_text, read_yaml_mapping, validate_model
from mtpeft.errors import ConfigError, shorten, shorten_list
from mtpeft.paths import safe_filename
from mtpeft.tasks.registry import task_label

# torch.manual_seed and numpy's legacy seeding accept exactly this range; outside it they raise mid-run.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Random seed, 0 .. 2**32-1.")]


class TaskEntry(BaseModel):
    """One task of a run: which task, which data, and its per-task batching."""

    # allow_inf_nan=False: text such as "inf" or "1e400" would otherwise validate as an infinite float
    # (non-finite YAML numbers are refused before, by config_files.check_plain, naming the field).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str = Field(min_length=1, description="Built-in task name or path of a task YAML (.yaml/.yml).")
    data: str | None = Field(default=None, description="Data folder; defaults to the task's own `data`.")
    name: str | None = Field(
        default=None, min_length=1, description="Alias, to train one task kind on two datasets."
    )
    batch_size: int = Field(default=8, ge=1)
    batch_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Fill each training batch to this many padded token positions (every input of an "
        "example counted; at least 2 examples a batch) instead of batch_size examples: short code gets "
        "larger batches. null: batch_size examples.",
    )
    eval_batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=256, ge=8, description="Max tokens of code (each snippet for pairs).")
    max_query_length: int = Field(default=64, ge=4, description="Max tokens of a retrieval query.")
    max_train_examples: int | None = Field(default=None, ge=1, description="Subsample train (seeded).")
    max_eval_examples: int | None = Field(default=None, ge=1, description="Subsample valid/test (seeded).")
    valid_from_train: int | None = Field(
        default=None,
        ge=1,
        description="Hold out this many train examples (seeded) as the valid split, for data that has none "
        "(e.g. bugs2fix-small); they are left out of training.",
    )
    # Tasks trained through the language model (kind generation, or formulation instruct).
    formulation: Literal["heads", "instruct"] | None = Field(
        default=None,
        description="heads: a small head on pooled vectors; instruct: the example becomes a prompt and the "
        "LM head learns the label word (binary, pair, multiclass). Default: heads; generation is instruct.",
    )
    max_target_length: int = Field(
        default=128, ge=1, description="Max tokens of a generation target, trained and generated."
    )
    num_beams: int = Field(default=1, ge=1, description="Beams when generating at evaluation (1: greedy).")
    packing: bool = Field(
        default=False,
        description="Generation/instruct on a decoder: pack several short examples into one row, with no "
        "attention across them.",
    )

    @property
    def label(self) -> str:
        """The task's name in this run (metrics, store, file names): the alias, else the task's own name."""
        return self.name or task_label(self.task)


# Fields left out of the run key while at these defaults (see TrainConfig.hashable).
_KEY_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "loss_weighting_options": {},
    "grad_conflict_every": None,
    "token_loss": "task-token",
    "curve_test": False,
    "backbone_dropout": None,
    "head_dropout": 0.1,
}
# The same, for each task entry's fields (tasks trained through the LM came later).
_ENTRY_KEY_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "batch_tokens": None,
    "valid_from_train": None,
    "formulation": None,
    "max_target_length": 128,
    "num_beams": 1,
    "packing": False,
}


class DistributedConfig(BaseModel):
    """How several processes share the model (data parallelism always divides every batch among them)."""

    model_config = ConfigDict(extra="forbid")

    sharding: Literal["none", "fsdp"] = Field(
        default="none",
        description="none: every process holds the whole model (DDP); fsdp: each holds 1/P of every "
        "weight, gradient and optimiser moment (torch FSDP2). Also on with accelerate launch --use_fsdp.",
    )
    reshard_after_forward: bool = Field(
        default=True,
        description="fsdp: drop each block's gathered weights after its forward (less memory; false "
        "keeps them until the backward: less communication).",
    )
    wrap_classes: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        description="fsdp: module class names sharded as units; null: the model's transformer blocks "
        "(its _no_split_modules).",
    )


class AffinityOptions(BaseModel):
    """Lookahead task affinity (Fifty et al. 2021, Task Affinity Grouping): training/affinity.py."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(
        ge=1,
        description="Every K steps, a lookahead SGD step on each task's gradient alone and every task's "
        "relative loss change on its own batch; undone exactly (the trained weights are the same).",
    )


class TrainConfig(BaseModel):
    """A fully described run: with its seed, this is what the store keys on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(default="run", min_length=1, description="Run (or group) name shown in `mtpeft runs`.")
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
    loss_weighting: Literal["equal", "learned", "uncertainty", "normalized", "gradnorm", "famo"] = Field(
        default="equal", description="How task losses combine; `mtpeft methods` lists them, one line each."
    )
    loss_weighting_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the loss weighting (`mtpeft methods` names them)."
    )
    grad_conflict_every: int | None = Field(
        default=None,
        ge=1,
        description="Every K steps, the cosine between tasks' gradients on the shared module (off: null).",
    )
    affinity: AffinityOptions | None = Field(
        default=None,
        description="Lookahead task affinity, `{every: K}` (off: null): RUN_DIR/affinity.json and the store; "
        "the lookahead is undone, so the trained weights and the run key are those of the run without it.",
    )
    token_loss: Literal["task-token", "batch-token", "sample"] = Field(
        default="task-token",
        description="How the token losses of tasks trained through the LM are averaged (MFTCoder's modes): "
        "task-token, per task over its target tokens in the step; batch-token, over all generative target "
        "tokens of the step alike; sample, each example's mean first (training/token_loss.py).",
    )
    backbone_dropout: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Dropout inside the backbone (hidden and attention) while training; null keeps the "
        "model's own. 0 lets CPU attention use its fused kernel: 1.7x-3x faster PEFT steps on minilm.",
    )
    head_dropout: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Dropout in the classification and pair heads while training. 0 makes a run on "
        "several processes give the one-process result (dropout draws differ per process).",
    )
    lr: float = Field(default=5e-4, gt=0, description="Learning rate of the shared module.")
    head_lr: float | None = Field(default=None, gt=0, description="Learning rate of the heads (default: lr).")
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=200, ge=1, description="Optimiser steps (each sees one batch per task).")
    eval_every: int = Field(default=50, ge=1, description="Validate every N steps.")
    curve_test: bool = Field(
        default=False,
        description="Also score the test split at every validation (the budget curve's test points; never "
        "used to select the model).",
    )
    save_every: int = Field(default=50, ge=1, description="Checkpoint every N steps (for --resume).")
    patience: int | None = Field(default=None, ge=1, description="Stop after N evals without improvement.")
    length_grouping: bool = Field(default=True, description="Batch similar lengths together.")
    dynamic_padding: bool = Field(default=True, description="Pad to the batch's longest, not max_length.")
    retrieval_dim: int = Field(default=256, ge=8)
    retrieval_scale: float = Field(default=20.0, gt=0, description="Similarity scale (1/temperature).")
    seed: Seed = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    workspace: Workspace = Field(default="workspace", description="Folder holding runs/ and mtpeft.sqlite.")
    study: str | None = None
    evaluate_splits: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: ["test"])
    baselines: bool = Field(default=True, description="Score majority/random/TF-IDF baselines beside.")
    # Where the curves go, not what is trained: never part of the run key (see hashable).
    log_with: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Experiment trackers for live curves (loss, loss weights, lr, throughput, validation "
        "metrics per step): tensorboard, or any tracker accelerate supports (wandb, mlflow, ...), one "
        "name or a list; files under RUN_DIR/tracking/. Empty: none. docs/training/tracking.md.",
    )

    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="With several processes: how the model is shared (`sharding: fsdp`).",
    )

    @field_validator("log_with", mode="before")
    @classmethod
    def _one_tracker_or_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else [] if value is None else value

    @model_validator(mode="after")
    def _unique_task_labels(self) -> TrainConfig:
        labels = [t.label for t in self.tasks]
        dupes = sorted(label for label, n in Counter(labels).items() if n > 1)  # Counter: linear
        if dupes:
            raise ValueError(f"task names must be unique; give `name:` to tell apart: {shorten_list(dupes)}")
        # Each task's prediction files are named after it; names that differ only in case (or in
        # characters a file name cannot hold) would share files on case-insensitive file systems.
        files: dict[str, str] = {}
        for label in labels:
            other = files.setdefault(safe_filename(label).lower(), label)
            if other != label:
                raise ValueError(
                    f"task names {shorten(other, 60)} and {shorten(label, 60)} would share prediction files; "
                    "rename one (`name:`)"
                )
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
        """The part of the config that defines the result (workspace, study and log_with do not)."""
        data = self.model_dump(mode="json")
        data.pop("workspace", None)
        data.pop("study", None)
        data.pop("log_with", None)
        data.pop("distributed", None)  # how the work is divided, like the number of processes
        data.pop("affinity", None)  # a measurement undone after each lookahead: the weights are the same
        # Fields added after runs were stored count only when set: a config that leaves them at their
        # default keeps the key it had before they existed, so finished runs are still found.
        for name, default in _KEY_NEUTRAL_DEFAULTS.items():
            if data.get(name) == default:
                data.pop(name)
        for entry in data["tasks"]:
            for name, default in _ENTRY_KEY_NEUTRAL_DEFAULTS.items():
                if entry.get(name) == default:
                    entry.pop(name)
        return data


_INDEX = re.compile(r"[0-9]+", re.ASCII)


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "text", type(None): "null"}
    return f"{kinds.get(type(value), type(value).__name__)} ({shorten(value, 60)})"


def _step(node: Any, key: str, reached: str, item: str, path: str | Path | None) -> tuple[Any, Any]:
    """(container, key) that `key` addresses inside `node`; lists take an index 0..n-1."""
    where = reached or "the config"
    if isinstance(node, dict):
        return node, key
    if isinstance(node, list):
        if not node:
            raise _override_error(item, path, f"{where} is an empty list: there is no entry '{key}' to set")
        last = len(node) - 1
        if not _INDEX.fullmatch(key):
            raise _override_error(item, path, f"{where} is a list, so '{key}' must be an index 0..{last}")
        if int(key) > last:
            raise _override_error(item, path, f"index {key} is out of range: {where} has entries 0..{last}")
        return node, int(key)
    raise _override_error(
        item, path, f"{where} is {_describe(node)}, not a mapping, so it has no field '{key}'"
    )


def _set_dotted(
    data: dict[str, Any], keys: list[str], value: Any, item: str, path: str | Path | None
) -> None:
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        container, slot = _step(node, key, ".".join(keys[:depth]), item, path)
        if isinstance(container, dict) and container.get(slot) is None:
            container[slot] = {}  # a missing (or null) parent: `method_options.r=4` creates the mapping
        node = container[slot]
    container, slot = _step(node, keys[-1], ".".join(keys[:-1]), item, path)
    container[slot] = value


def _override_error(item: str, path: str | Path | None, why: str) -> ConfigError:
    return ConfigError(
        f"cannot apply --set {shorten(item)}: {why}. Write key=value with a dotted key, "
        "e.g. --set max_steps=100 --set tasks.0.batch_size=4",
        path=path,
        field=item.partition("=")[0].strip() or None,
    )


def parse_override(item: str, *, path: str | Path | None = None) -> tuple[list[str], Any]:
    """(dotted key parts, value) of one `key=value` override; the value is a YAML value, no tags."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise _override_error(item, path, "there is no '='")
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise _override_error(item, path, f"the key {shorten(key.strip())} has an empty part")
    if not raw.strip():
        raise _override_error(item, path, "the value is empty (write key=null to unset a field)")
    if any(isinstance(t, (yaml.TagToken, yaml.AnchorToken, yaml.AliasToken)) for t in _tokens(raw)):
        raise _override_error(
            item,
            path,
            "YAML tags (!!...), anchors (&) and aliases (*) are not accepted; quote the "
            "value to pass it as text",
        )
    try:
        # Non-plain values (inf, dates, ...) are refused by validation, which names the field.
        return parts, load_yaml_text(raw, where=None, what="value")
    except ConfigError as err:
        raise _override_error(item, path, f"{err.reason}; quote text values") from err


def _tokens(raw: str) -> list[Any]:
    try:
        return list(yaml.scan(raw, Loader=yaml.SafeLoader))
    except Exception:  # noqa: BLE001 - unscannable text: load_yaml_text reports it with its position
        return []


def apply_overrides(
    data: dict[str, Any], overrides: list[str], *, path: str | Path | None = None
) -> dict[str, Any]:
    """`key=value` overrides (dotted keys reach nested fields and list entries; values parse as YAML)."""
    data = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item, path=path)
        _set_dotted(data, keys, value, item, path)
    return data


def validate_config(data: dict[str, Any], *, path: str | Path | None = None) -> TrainConfig:
    return validate_model(TrainConfig, data, path=path)


def load_config(
    path: str | Path, overrides: list[str] | None = None, *, fields: dict[str, Any] | None = None
) -> TrainConfig:
    """The config in `path`, with `fields` set as given (typed CLI flags: never parsed as YAML) and then
    the `--set` overrides applied."""
    data = read_yaml_mapping(path, what="config file", expected="name, mode, model, method, tasks, ...")
    data |= {k: v for k, v in (fields or {}).items() if v is not None}
    overrides = overrides or []
    try:
        return validate_config(apply_overrides(data, overrides, path=path), path=path)
    except ConfigError as err:
        raise _blame_override(err, overrides) from err


def _blame_override(err: ConfigError, overrides: list[str]) -> ConfigError:
    """`err`, naming the --set that put the bad value there (the file may not even hold that field)."""
    field = err.field or ""
    culprits = [
        item
        for item in overrides
        if field and (key := item.partition("=")[0].strip()) and (key == field or key.startswith(field + "."))
    ]
    if not culprits or "--set" in err.reason:
        return err
    return ConfigError(f"{err.reason} (set by --set {shorten(culprits[-1])})", path=err.path, field=err.field)


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
