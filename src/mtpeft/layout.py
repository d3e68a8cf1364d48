"""Where a run's files live: its directory and its checkpoints (torch-free, so `--dry-run` can read them)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from mtpeft.config import TrainConfig, load_config, with_absolute_paths

STORE_FILE = "mtpeft.sqlite"
RUNS_DIR = "runs"
RUN_FILE = "run.json"  # run id and group id
CONFIG_FILE = "config.yaml"
COST_FILE = "cost.json"
TRAIN_LOG = "train.log"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete
BEST_DIR = "best"  # what a deployment loads
ADAPTER_DIR = "adapter"
HEADS_WEIGHTS = "heads.safetensors"
HEADS_META = "heads.json"
PREDICTIONS_DIR = "predictions"
EVALUATION_FILE = "evaluation.json"  # in an evaluation's prediction folder: what was scored, and the scores


def store_path(workspace: str | Path) -> Path:
    return Path(workspace) / STORE_FILE


def predictions_dir(run_dir: Path, split: str) -> Path:
    return run_dir / PREDICTIONS_DIR / split


def per_example_path(run_dir: Path, split: str, task: str) -> Path:
    return predictions_dir(run_dir, split) / f"{task}.per_example.json"


def metrics_path(run_dir: Path, split: str) -> Path:
    return run_dir / f"metrics.{split}.json"


def run_dir_for(config: TrainConfig) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.name).strip("-") or "run"
    return Path(config.workspace) / RUNS_DIR / f"{slug}-{config.run_key()[:10]}"


def split_single(config: TrainConfig) -> list[TrainConfig]:
    """`mode: single` over N tasks = N one-task runs with the same code path and settings."""
    return [
        config.model_copy(update={"tasks": [entry], "name": f"{config.name}-{entry.label}"})
        for entry in config.tasks
    ]


def run_configs(config: TrainConfig) -> list[TrainConfig]:
    """The runs (each with its own directory) that training this config makes."""
    return [config] if config.mode == "multi" else split_single(config)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted((run_dir / CHECKPOINTS_DIR).glob("step-*"))
    complete = [c for c in checkpoints if (c / STATE_FILE).exists()]
    return complete[-1] if complete else None


def checkpointed_steps(config: TrainConfig) -> int:
    """Optimiser steps a resumed run will not repeat: the step of its latest complete checkpoint
    (0 where the config makes several runs: their progress differs, so nothing is taken off)."""
    runs = run_configs(config)
    checkpoint = latest_checkpoint(run_dir_for(runs[0])) if len(runs) == 1 else None
    if checkpoint is None:
        return 0
    return int(json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")).get("step", 0))


# ---- a run directory read from anywhere ----------------------------------------------------------
def load_run_config(run_dir: Path) -> TrainConfig:
    """The run's saved config with absolute paths, whatever the current working directory.

    Runs save theirs with absolute paths already; older ones hold paths relative to where training ran,
    which `training_root` recovers.
    """
    config = load_config(run_dir / CONFIG_FILE)
    return with_absolute_paths(config, training_root(run_dir, config))


def training_root(run_dir: Path, config: TrainConfig) -> Path:
    """The working directory a run was trained from: its directory is <root>/<workspace>/runs/<run>
    when the workspace was relative; else (absolute workspace, or a run directory moved since) the
    current directory, where relative paths pointed before run directories were self-contained."""
    workspace = Path(os.path.normpath(config.workspace))
    here = Path(run_dir).resolve()
    depth = 2 + len(workspace.parts)  # <run> and runs/, then the workspace's own parts
    if workspace.is_absolute() or ".." in workspace.parts or len(here.parents) < depth:
        return Path.cwd()
    root = here.parents[depth - 1]
    return root if root / workspace / RUNS_DIR / here.name == here else Path.cwd()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "data"


def evaluation_dir(run_dir: Path, task: str, data: Path, split: str) -> Path:
    """Prediction files of the run's `task` scored on the data folder `data`:
    predictions/<task>@<folder name>-<8 hex of its absolute path>/<split>/. The '@' keeps it apart from
    the run's own predictions/<split>/, the hash apart from other folders of the same name."""
    absolute = str(Path(data).resolve())
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:8]
    name = f"{_slug(task)}@{_slug(Path(absolute).name)}-{digest}"
    return run_dir / PREDICTIONS_DIR / name / _slug(split)
