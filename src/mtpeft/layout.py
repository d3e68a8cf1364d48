"""Where a run's files live: its directory and its checkpoints (torch-free, so `--dry-run` can read them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mtpeft.config import TrainConfig

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
