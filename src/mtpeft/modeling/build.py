"""Build the multi-task model from a config, save the deployable `best/`, and load it back.

`best/` holds the shared module (`adapter/`, written by the PEFT method), the heads' tensors
(`heads.safetensors`, keys `<task>.<head parameter>`) and `heads.json`: the format version, the step
and score it was selected at, the pooling, each task's declaration and the inputs each head reads.
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
from mtpeft.config import TrainConfig
from mtpeft.errors import ConfigError, DamagedFiles
from mtpeft.manifest import MANIFEST_FILE, manifest_problem, write_manifest
from mtpeft.modeling.model import MultiTaskModel
from mtpeft.models import load_backbone
from mtpeft.models.loading import Backbone
from mtpeft.peft_methods import apply_method, get_method
from mtpeft.peft_methods.base import AdaptedBackbone
from mtpeft.tasks.spec import TaskSpec

# 1: heads.json without a version (before heads read pooled vectors); same tensors, loads as is.
# 2: adds format_version and, per head, the inputs it reads, checked on load.
HEADS_FORMAT_VERSION = 2


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
    return {"dim": config.retrieval_dim, "scale": config.retrieval_scale}


def build_model(
    config: TrainConfig, tasks: dict[str, TaskSpec], *, loss_weighting: nn.Module | None = None
) -> BuiltModel:
    """Backbone + the config's PEFT method + one fresh head per task (seeded by the caller)."""
    backbone = load_backbone(config.model, seed=config.seed)
    adapted = apply_method(backbone, config.method, config.method_options)
    model = MultiTaskModel(
        adapted,
        tasks,
        hidden_size=backbone.info.hidden_size,
        pooling=config.pooling or backbone.info.default_pooling,
        loss_weighting=loss_weighting,
        head_options=head_options(config),
    )
    return BuiltModel(backbone, adapted, model)


def save_deployable(model: MultiTaskModel, directory: Path, *, step: int, score: float) -> None:
    """Write `best/` whole or not at all: into a scratch folder first, renamed over the old one."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.backbone.save(tmp / layout.ADAPTER_DIR)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.heads.state_dict().items()}
    save_file(tensors, str(tmp / layout.HEADS_WEIGHTS))
    meta = {
        "format_version": HEADS_FORMAT_VERSION,
        "step": step,
        "score": score,
        "pooling": model.pooling,
        "tasks": {n: spec.model_dump(mode="json") for n, spec in model.tasks.items()},
        "heads": {n: {"inputs": list(head.inputs)} for n, head in model.heads.items()},
    }
    (tmp / layout.HEADS_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    write_manifest(tmp)  # last; loading verifies best/ against it
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


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
    meta = json.loads(path.read_text(encoding="utf-8"))
    version = meta.get("format_version", 1)
    if version > HEADS_FORMAT_VERSION:
        raise ConfigError(
            f"written by a newer mtpeft (heads format {version}; this one reads up to "
            f"{HEADS_FORMAT_VERSION}); upgrade mtpeft to load it",
            path=path,
        )
    return meta


def load_trained(run_dir: Path, device: torch.device | None = None) -> TrainedRun:
    """The best saved module + heads on a fresh backbone: exactly what a deployment loads.

    The tasks come from `best/heads.json`, so no data folder is needed.
    """
    best = run_dir / layout.BEST_DIR
    verify_best(run_dir)
    meta = read_heads_meta(best)
    config = layout.load_run_config(run_dir)  # absolute data paths: loads from any working directory
    backbone = load_backbone(config.model, seed=config.seed)
    adapted = get_method(config.method).load(backbone, best / layout.ADAPTER_DIR)
    tasks = {name: TaskSpec.model_validate(spec) for name, spec in meta["tasks"].items()}
    model = MultiTaskModel(
        adapted,
        tasks,
        hidden_size=backbone.info.hidden_size,
        pooling=meta["pooling"],
        head_options=head_options(config),
    )
    _check_head_inputs(model, meta, best / layout.HEADS_META)
    _load_heads(model, best / layout.HEADS_WEIGHTS, meta.get("format_version", 1))
    model.to(device or torch.device("cpu")).eval()
    return TrainedRun(model, backbone, config)


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
