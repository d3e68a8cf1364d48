"""Where a run's files live: its directory and its checkpoints (torch-free, so `--dry-run` can read them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mtpeft.manifest import has_manifest
from mtpeft.paths import inside, safe_filename
from mtpeft.training.config import TrainConfig

RUNS_DIR = "runs"  # under the workspace; one folder per run

STATE_FILE = "trainer_state.json"  # the trainer's own part of a checkpoint (step, best, cursors)
_CHECKPOINT_NAME = re.compile(r"step-\d+")  # `step-N.tmp` is one still being written


def run_dir_for(config: TrainConfig) -> Path:
    """WORKSPACE/runs/<name>-<key>: the name only through safe_filename, so no name leaves runs/."""
    runs = Path(config.workspace) / RUNS_DIR
    return inside(runs, runs / f"{safe_filename(config.name)}-{config.run_key()[:10]}")


def split_single(config: TrainConfig) -> list[TrainConfig]:
    """`mode: single` over N tasks = N one-task runs with the same code path and settings."""
    return [
        config.model_copy(update={"tasks": [entry], "name": f"{config.name}-{entry.label}"})
        for entry in config.tasks
    ]


def run_configs(config: TrainConfig) -> list[TrainConfig]:
    """The runs (each with its own directory) that training this config makes."""
    return [config] if config.mode == "multi" else split_single(config)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Checkpoints under their final name, newest first. A checkpoint is renamed to its final name
    only after its manifest is written, so `step-N.tmp` ones (cut short by a kill) are not listed;
    whether a listed one is intact is for `mtpeft.manifest.manifest_problem` to say."""
    found = [
        p
        for p in (run_dir / "checkpoints").glob("step-*")
        if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (manifest present; its files are not hashed here)."""
    return next((c for c in checkpoint_dirs(run_dir) if has_manifest(c)), None)


def checkpointed_steps(config: TrainConfig) -> int:
    """Optimiser steps a resumed run will not repeat: the step of its latest complete checkpoint
    (0 where the config makes several runs: their progress differs, so nothing is taken off)."""
    runs = run_configs(config)
    checkpoint = latest_checkpoint(run_dir_for(runs[0])) if len(runs) == 1 else None
    if checkpoint is None:
        return 0
    try:
        return int(json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")).get("step", 0))
    except (OSError, ValueError, AttributeError):  # damaged: resuming will fall back, so estimate no saving
        return 0
