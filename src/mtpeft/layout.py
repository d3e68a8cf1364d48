"""Where a run's files live: its directory and its checkpoints (torch-free, so `--dry-run` can read them)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from mtpeft.config import TrainConfig, load_config, with_absolute_paths
from mtpeft.errors import DamagedFiles
from mtpeft.manifest import has_manifest
from mtpeft.paths import inside, safe_filename, task_file

STORE_FILE = "mtpeft.sqlite"
RUNS_DIR = "runs"
RUN_FILE = "run.json"  # run id and group id
CONFIG_FILE = "config.yaml"
COST_FILE = "cost.json"
CURVE_FILE = "curve.json"  # validation (and curve_test) scores against cumulative training compute
GRAD_CONFLICT_FILE = "grad_conflict.json"  # cosines between tasks' gradients (grad_conflict_every)
AFFINITY_FILE = "affinity.json"  # lookahead task affinity (affinity: {every: K})
TRAIN_LOG = "train.log"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"  # the trainer's own part of a checkpoint (step, best, cursors)
_CHECKPOINT_NAME = re.compile(r"step-\d+")  # `step-N.tmp` is one still being written
BEST_DIR = "best"  # what a deployment loads
ADAPTER_DIR = "adapter"
HEADS_WEIGHTS = "heads.safetensors"
HEADS_META = "heads.json"
PREDICTIONS_DIR = "predictions"
EVALUATION_FILE = "evaluation.json"  # in an evaluation's prediction folder: what was scored, and the scores


def store_path(workspace: str | Path) -> Path:
    return Path(workspace) / STORE_FILE


def predictions_dir(run_dir: str | Path, split: str) -> Path:
    """Where a run's prediction files for `split` go: RUN_DIR/predictions/<split>."""
    return inside(run_dir, Path(run_dir) / PREDICTIONS_DIR / safe_filename(split))


def per_example_path(run_dir: Path, split: str, task: str) -> Path:
    return task_file(predictions_dir(run_dir, split), task, "per_example.json")


def metrics_path(run_dir: Path, split: str) -> Path:
    return run_dir / f"metrics.{safe_filename(split)}.json"


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
        for p in (run_dir / CHECKPOINTS_DIR).glob("step-*")
        if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")), reverse=True)


def read_run_file(run_dir: Path) -> dict[str, Any] | None:
    """RUN_DIR/run.json ({"run_id": ..., ...}); None when there is none; DamagedFiles when it is there
    but not that (truncated, `null`, a list, no run id), naming the file and what to do."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        problem = None if isinstance(content, dict) else f"a JSON {type(content).__name__}, not an object"
        if problem is None and not (isinstance(content.get("run_id"), str) and content["run_id"]):
            problem = "names no run_id"
    except (OSError, ValueError) as err:  # ValueError: JSON and UTF-8 errors
        problem = f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    if problem is not None:
        raise DamagedFiles(
            f"{path} is damaged ({problem}), so the run it belongs to is unknown; train the run again "
            "without --resume (it starts from step 0), or restore the file from a backup"
        )
    return content


# What a run directory holds, by kind: a resume writes into each, so each must be what it should be.
_RUN_DIR_FOLDERS = (CHECKPOINTS_DIR, BEST_DIR)
_RUN_DIR_FILES = (RUN_FILE, CONFIG_FILE, TRAIN_LOG)


def check_run_dir(run_dir: Path) -> None:
    """Refuse, with one message, a run directory whose parts are of the wrong kind (`checkpoints` a file,
    `train.log` a folder): resuming would write into them and fail with an OS error halfway."""
    for name, wanted in [*((n, "folder") for n in _RUN_DIR_FOLDERS), *((n, "file") for n in _RUN_DIR_FILES)]:
        path = Path(run_dir) / name
        if not path.exists() or (path.is_dir() if wanted == "folder" else path.is_file()):
            continue
        raise DamagedFiles(
            f"{path} should be a {wanted} written by mtpeft but is not; move it out of the way and run "
            "`mtpeft train CONFIG --resume` again (a missing checkpoints folder resumes from step 0), "
            "or train again without --resume"
        )


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


def evaluation_dir(run_dir: Path, task: str, data: Path, split: str) -> Path:
    """Prediction files of the run's `task` scored on the data folder `data`:
    predictions/<task>@<folder name>-<8 hex of its absolute path>/<split>/. The '@' keeps it apart from
    the run's own predictions/<split>/, the hash apart from other folders of the same name."""
    absolute = str(Path(data).resolve())
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:8]
    name = f"{safe_filename(task)}@{safe_filename(Path(absolute).name)}-{digest}"
    return inside(run_dir, run_dir / PREDICTIONS_DIR / name / safe_filename(split))
