"""Build the multi-task model from a config, save the deployable `best/`, and load it back.

`best/` holds the shared module (`adapter/`, written by the PEFT method), the heads' tensors
(`heads.safetensors`, keys `<task>.<head parameter>`) and `heads.json`: the format version, the step
and score it was selected at, the pooling, each task's declaration, the inputs each head reads and the
tasks trained through the LM head (which have no head; their model is loaded with its LM head).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtpeft import layout
from mtpeft.calibration_file import CALIBRATION_DIR, Calibration, read_calibration
from mtpeft.config import TaskEntry, TrainConfig
from mtpeft.errors import ConfigError, DamagedFiles
from mtpeft.heads.classification import ClassificationHead
from mtpeft.manifest import MANIFEST_FILE, manifest_problem, write_manifest
from mtpeft.modeling.lm_inputs import uses_lm
from mtpeft.modeling.model import MultiTaskModel
from mtpeft.models import load_backbone
from mtpeft.models.dropout import set_backbone_dropout
from mtpeft.models.loading import Backbone, ModelInfo
from mtpeft.peft_methods import apply_method, get_method
from mtpeft.peft_methods.base import AdaptedBackbone
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskSpec

# 1: heads.json without a version (before heads read pooled vectors); same tensors, loads as is.
# 2: adds format_version and, per head, the inputs it reads, checked on load.
# 3: adds `lm_tasks` (tasks trained through the LM head, no head of their own), where a run has any.
HEADS_FORMAT_VERSION = 3


@dataclass
class BuiltModel:
    backbone: Backbone  # the loaded model and its tokenizer (the model is adapted in place)
    adapted: AdaptedBackbone  # the shared module, what `adapter/` saves
    model: MultiTaskModel


class TrainedRun(NamedTuple):
    model: MultiTaskModel  # in eval mode, on the requested device
    backbone: Backbone
    config: TrainConfig


def head_options(config: TrainConfig) -> dict[str, Any]:
    return {"dim": config.retrieval_dim, "scale": config.retrieval_scale, "dropout": config.head_dropout}


def lm_task_entries(config: TrainConfig, tasks: dict[str, TaskSpec]) -> dict[str, TaskEntry]:
    """The tasks trained through the LM head (formulation instruct), with their config entries."""
    entries = {entry.label: entry for entry in config.tasks}
    # A task without an entry (built directly, as tests do) takes the entry defaults.
    chosen = {name: entries.get(name) or TaskEntry(task=name) for name in tasks}
    return {name: chosen[name] for name, spec in tasks.items() if uses_lm(spec, chosen[name])}


def build_model(
    config: TrainConfig,
    tasks: dict[str, TaskSpec],
    *,
    loss_weighting: nn.Module | None = None,
    token_loss: Any = None,
) -> BuiltModel:
    """Backbone + the config's PEFT method + one fresh head per task (seeded by the caller); with its LM
    head where a task trains through it (a run without one loads exactly as before)."""
    lm_tasks = lm_task_entries(config, tasks)
    backbone = load_backbone(config.model, seed=config.seed, lm_head=bool(lm_tasks))
    if config.backbone_dropout is not None:  # before the method adds its own (LoRA's dropout stays)
        set_backbone_dropout(backbone.model, config.backbone_dropout)
    adapted = apply_method(backbone, config.method, config.method_options, tasks=list(tasks))
    _check_packing(config, lm_tasks, adapted)
    _check_generation(config, tasks, lm_tasks)
    model = MultiTaskModel(
        adapted,
        tasks,
        hidden_size=backbone.info.hidden_size,
        pooling=config.pooling or backbone.info.default_pooling,
        loss_weighting=loss_weighting,
        head_options=head_options(config),
        lm_tasks=lm_tasks,
        tokenizer=backbone.tokenizer,
        token_loss=token_loss,
    )
    return BuiltModel(backbone, adapted, model)


def _check_generation(
    config: TrainConfig, tasks: dict[str, TaskSpec], lm_tasks: dict[str, TaskEntry]
) -> None:
    """A method that cannot generate is refused before training a task evaluated by generating."""
    problem = getattr(get_method(config.method), "generation_problem", None)
    generating = [name for name in lm_tasks if kind_of(tasks[name]).choices(tasks[name]) is None]
    if problem and generating:
        raise ConfigError(
            f"method '{config.method}' cannot generate the text of task '{generating[0]}': {problem}; "
            "use another method (e.g. lora or prompt)",
            field="method",
        )


def _check_packing(config: TrainConfig, lm_tasks: dict[str, TaskEntry], adapted: AdaptedBackbone) -> None:
    """Packing needs a decoder (one sequence per row) and real positions (no virtual tokens before them)."""
    for position, entry in enumerate(config.tasks):
        if not entry.packing:
            continue
        if entry.label not in lm_tasks:
            problem = "packs prompt + target rows, and this task trains a head (formulation heads)"
        elif adapted.info.lm_head != "causal":
            problem = f"packs decoder rows, and {config.model} is an encoder-decoder"
        elif adapted.is_prompt_learning:
            problem = f"needs its own attention mask and positions, which {config.method} replaces"
        else:
            continue
        raise ConfigError(
            f"task '{entry.label}': packing {problem}; set packing: false", field=f"tasks.{position}.packing"
        )


def save_deployable(
    model: MultiTaskModel,
    directory: Path,
    *,
    step: int,
    score: float | None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `best/` whole or not at all: into a scratch folder first, renamed over the old one.
    `score`: the validation score it was selected at (None: not selected by one, a merged run).
    `state_dict`: the whole model's weights, keyed as `model.state_dict()`, where the model's own are
    sharded (FSDP: gathered by modeling/fsdp.py); None: the model's own."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_deployable(model, tmp, step=step, score=score, state_dict=state_dict)
    except BaseException:  # a full disk, Ctrl-C: no half-written best.tmp is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def _part(state_dict: dict[str, torch.Tensor] | None, prefix: str) -> dict[str, torch.Tensor] | None:
    """The entries of `state_dict` under `prefix`, with it cut off (None stays None)."""
    if state_dict is None:
        return None
    return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}


def _write_deployable(
    model: MultiTaskModel,
    tmp: Path,
    *,
    step: int,
    score: float | None,
    state_dict: dict[str, torch.Tensor] | None,
) -> None:
    model.backbone.save(tmp / layout.ADAPTER_DIR, _part(state_dict, "backbone.base_model."))
    heads = _part(state_dict, "heads.")
    if heads is None:
        heads = model.heads.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in heads.items()}
    save_file(tensors, str(tmp / layout.HEADS_WEIGHTS))
    meta = {
        "format_version": HEADS_FORMAT_VERSION,
        "step": step,
        "score": score,
        "pooling": model.pooling,
        "tasks": {n: spec.model_dump(mode="json") for n, spec in model.tasks.items()},
        "heads": {n: {"inputs": list(head.inputs)} for n, head in model.heads.items()},
    }
    if model.lm_tasks:
        meta["lm_tasks"] = {n: {"formulation": "instruct"} for n in model.lm_tasks}
    (tmp / layout.HEADS_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    write_manifest(tmp)  # last; loading verifies best/ against it


def verify_best(run_dir: Path) -> None:
    """best/ (module + heads) must match the manifest training wrote last; else one clear error.

    Checked before anything is loaded: a truncated or bit-flipped safetensors file would otherwise
    fail deep inside safetensors/peft, or load and score as a different model. A best/ written before
    manifests existed (heads format 1) loads unverified, with a warning, so old runs keep working.
    """
    best = run_dir / layout.BEST_DIR
    if not best.is_dir():
        raise DamagedFiles(f"{run_dir} holds no trained model (no {layout.BEST_DIR}/); train it first")
    if not (best / MANIFEST_FILE).exists() and read_heads_meta(best).get("format_version", 1) == 1:
        print(
            f"warning: {best} was written by an mtpeft before checksums; loading it unverified",
            file=sys.stderr,
        )
        return
    problem = manifest_problem(best)
    if problem is not None:
        raise DamagedFiles(
            f"run {run_dir.name}'s {layout.BEST_DIR}/ is damaged ({problem}) in {best}; "
            "retrain it (mtpeft train CONFIG) or restore the folder from a backup"
        )


def read_heads_meta(best: Path) -> dict[str, Any]:
    path = best / layout.HEADS_META
    if not path.is_file():
        missing = f"{layout.BEST_DIR}/{layout.HEADS_META}"
        raise ConfigError(f"holds no trained model (missing {missing}); train it first", path=best.parent)
    meta = _parse_heads_meta(path)
    version = meta.get("format_version", 1)
    if version > HEADS_FORMAT_VERSION:
        raise ConfigError(
            f"written by a newer mtpeft (heads format {version}; this one reads up to "
            f"{HEADS_FORMAT_VERSION}); upgrade mtpeft to load it",
            path=path,
        )
    return meta


def _parse_heads_meta(path: Path) -> dict[str, Any]:
    """heads.json as training writes it, or DamagedFiles naming it. Usually the manifest has vouched
    for its bytes already; a best/ without a manifest (older, or its manifest lost) has only this."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSON and UTF-8 errors
        problem = f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    else:
        problem = _heads_meta_problem(meta)
    if problem is None:
        return meta
    raise DamagedFiles(
        f"{path} is damaged ({problem}), so the run's trained heads cannot be loaded; retrain it "
        "(mtpeft train CONFIG) or restore its best/ folder from a backup"
    )


def _heads_meta_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, not an object"
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"format_version {version!r} is not a positive whole number"
    if not isinstance(meta.get("tasks"), dict) or not meta["tasks"]:
        return "no 'tasks' object"
    for name, spec in meta["tasks"].items():
        try:
            TaskSpec.model_validate(spec)
        except ValueError as err:  # pydantic's ValidationError is one
            return f"task {name!r} is not a task declaration ({str(err).splitlines()[0]})"
    if not isinstance(meta.get("pooling"), str):
        return "no 'pooling' name"
    for key in ("heads", "lm_tasks"):
        if not isinstance(meta.get(key, {}), dict):
            return f"'{key}' is not an object"
    heads = meta.get("heads", {})
    if not all(isinstance(h, dict) and isinstance(h.get("inputs"), list) for h in heads.values()):
        return "a head without its list of inputs"
    return None


class SavedRun(NamedTuple):
    """A run directory whose `best/` passed the integrity checks, with what loading it needs."""

    run_dir: Path
    config: TrainConfig  # with absolute data paths: loads from any working directory
    meta: dict[str, Any]  # best/heads.json
    calibration: Calibration | None = None  # RUN_DIR/calibration/, checked; None: uncalibrated

    @property
    def best(self) -> Path:
        return self.run_dir / layout.BEST_DIR

    @property
    def adapter_dir(self) -> Path:
        return self.best / layout.ADAPTER_DIR


def read_saved(run_dir: Path, *, calibrated: bool = True) -> SavedRun:
    """Verify `best/` (and its calibration/, where there is one) and read its heads.json and the run's
    config; no model is loaded yet. `calibrated=False`: ignore calibration/ (what refitting it reads)."""
    verify_best(run_dir)
    meta = read_heads_meta(run_dir / layout.BEST_DIR)
    calibration = read_calibration(run_dir) if calibrated else None
    return SavedRun(run_dir, layout.load_run_config(run_dir), meta, calibration)


def load_module(saved: SavedRun) -> tuple[Backbone, AdaptedBackbone]:
    """A fresh backbone (same model, same seed as training) with the run's saved module applied."""
    lm_head = bool(saved.meta.get("lm_tasks"))
    backbone = load_backbone(saved.config.model, seed=saved.config.seed, lm_head=lm_head)
    return backbone, get_method(saved.config.method).load(backbone, saved.adapter_dir)


def attach_heads(
    saved: SavedRun, backbone: nn.Module, info: ModelInfo, *, tokenizer: Any = None
) -> MultiTaskModel:
    """The run's MultiTaskModel over `backbone` (its adapted backbone, or a view of a shared one), with the
    saved heads loaded after checking they fit the heads this mtpeft builds. `tokenizer`: the backbone's,
    which tasks trained through the LM head need to generate."""
    tasks = {name: TaskSpec.model_validate(spec) for name, spec in saved.meta["tasks"].items()}
    model = MultiTaskModel(
        backbone,
        tasks,
        hidden_size=info.hidden_size,
        pooling=saved.meta["pooling"],
        head_options=head_options(saved.config),
        lm_tasks=_saved_lm_tasks(saved),
        tokenizer=tokenizer,
    )
    _check_head_inputs(model, saved.meta, saved.best / layout.HEADS_META)
    _load_heads(model, saved.best / layout.HEADS_WEIGHTS, saved.meta.get("format_version", 1))
    _set_temperatures(model, saved)
    return model


def _set_temperatures(model: MultiTaskModel, saved: SavedRun) -> None:
    """Each calibrated head divides its logits by its task's temperature from now on."""
    calibration = saved.calibration
    model.calibration = calibration
    for name, temperature in (calibration.temperatures if calibration else {}).items():
        head = model.heads[name] if name in model.heads else None  # noqa: SIM401 (ModuleDict has no get)
        if not isinstance(head, ClassificationHead):
            raise DamagedFiles(
                f"{saved.run_dir / CALIBRATION_DIR}: task {name!r} has a temperature but no classification "
                f"head in this run; fit it again with `mtpeft calibrate {saved.run_dir}`"
            )
        head.set_temperature(temperature)


def _saved_lm_tasks(saved: SavedRun) -> dict[str, TaskEntry]:
    """heads.json's LM tasks, each with the run config's entry (its prompt and generation limits)."""
    entries = {entry.label: entry for entry in saved.config.tasks}
    names = saved.meta.get("lm_tasks", {})
    return {n: entries.get(n) or TaskEntry(task=n, formulation="instruct") for n in names}


def load_saved(saved: SavedRun, device: torch.device | None = None) -> TrainedRun:
    """A checked run on its own fresh backbone, in eval mode on `device` (default: the CPU)."""
    backbone, adapted = load_module(saved)
    model = attach_heads(saved, adapted, backbone.info, tokenizer=backbone.tokenizer)
    model.to(device or torch.device("cpu")).eval()
    return TrainedRun(model, backbone, saved.config)


def load_trained(run_dir: Path, device: torch.device | None = None, *, calibrated: bool = True) -> TrainedRun:
    """The best saved module + heads on a fresh backbone: exactly what a deployment loads (with its
    calibration, unless `calibrated=False`).

    The tasks come from `best/heads.json`, so no data folder is needed.
    """
    return load_saved(read_saved(run_dir, calibrated=calibrated), device)


def _check_head_inputs(model: MultiTaskModel, meta: dict[str, Any], path: Path) -> None:
    """A head trained on other inputs (or in another order) would load and silently mispredict."""
    for name, saved in meta.get("heads", {}).items():
        now = list(model.heads[name].inputs)
        if saved["inputs"] != now:
            raise ConfigError(
                f"head '{name}' was trained on inputs {saved['inputs']}, but its task kind now reads {now}; "
                "evaluate it with the mtpeft version that trained it, or retrain",
                path=path,
            )


def _load_heads(model: MultiTaskModel, path: Path, version: int) -> None:
    saved = load_file(str(path))
    expected = model.heads.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    resized = sorted(k for k in set(saved) & set(expected) if saved[k].shape != expected[k].shape)
    if missing or unexpected or resized:
        changes = {"missing": missing, "not expected": unexpected, "of another shape": resized}
        listed = "; ".join(f"{what}: {', '.join(keys)}" for what, keys in changes.items() if keys)
        raise ConfigError(
            f"the saved heads (format {version}) do not match the heads this mtpeft builds for the run's "
            f"tasks ({listed}); evaluate it with the mtpeft version that trained it, or retrain",
            path=path,
        )
    model.heads.load_state_dict(saved)
