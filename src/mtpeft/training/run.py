"""Run orchestration: run directories, the store, single-mode groups, train-then-evaluate."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtpeft import layout
from mtpeft.config import TrainConfig, with_absolute_paths
from mtpeft.errors import MtpeftError
from mtpeft.evaluation.run_eval import evaluate_run
from mtpeft.layout import RUN_FILE, run_dir_for, split_single
from mtpeft.store import RunStore
from mtpeft.training.preflight import preflight
from mtpeft.training.run_lock import run_lock
from mtpeft.training.trainer import MultiTaskTrainer


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    name: str
    tasks: list[str]
    metrics: dict[str, dict[str, dict[str, float]]]
    baselines: dict[str, dict[str, dict[str, float]]]
    cost: dict[str, Any]


def store_for(config: TrainConfig) -> RunStore:
    workspace = Path(config.workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    return RunStore(layout.store_path(workspace))


def run_training(
    config: TrainConfig, *, resume: bool = False, progress: bool = True, source: str | Path | None = None
) -> list[RunResult]:
    """Train (and evaluate) the config's runs; `source` is the config file, named in errors.

    Nothing is written (no store row, no run directory) until the preflight has passed.
    """
    preflight(config, source=source)
    store = store_for(config)
    if config.mode == "multi":
        return [_run_one(config, store, group_id=None, resume=resume, progress=progress)]
    group_id = uuid.uuid4().hex[:12]
    return [
        _run_one(sub, store, group_id=group_id, resume=resume, progress=progress)
        for sub in split_single(config)
    ]


def _run_one(
    config: TrainConfig, store: RunStore, *, group_id: str | None, resume: bool, progress: bool
) -> RunResult:
    run_dir = run_dir_for(config)
    # Taken before the run's directory or store row is touched: a second process training the same
    # run stops here (RunLocked) and changes nothing of the first one's run.
    with run_lock(run_dir, config.name):
        return _run_locked(config, store, run_dir, group_id=group_id, resume=resume, progress=progress)


def _run_locked(
    config: TrainConfig, store: RunStore, run_dir: Path, *, group_id: str | None, resume: bool, progress: bool
) -> RunResult:
    previous = _read_run_file(run_dir) if resume else None
    if previous is not None and store.get(previous["run_id"]).status == "finished":
        record = store.get(previous["run_id"])
        return RunResult(
            record.run_id, run_dir, config.name, record.tasks, record.metrics, record.baselines, record.cost
        )
    if previous is not None:
        run_id = previous["run_id"]
        store.resume_run(run_id)
    else:
        run_id = store.start_run(
            name=config.name,
            study=config.study,
            group_id=group_id,
            mode=config.mode,
            model=config.model,
            method=config.method,
            tasks=[t.label for t in config.tasks],
            seed=config.seed,
            config=config.hashable() | {"key": config.run_key()},
            run_dir=str(run_dir),
        )
        new_run_dir(config, run_dir, run_id=run_id, group_id=group_id)
    try:
        trained = train_in_run_dir(config, run_dir, resume=previous is not None, progress=progress)
        store.finish_run(run_id, **trained.store_fields())
        shutil.rmtree(run_dir / layout.CHECKPOINTS_DIR, ignore_errors=True)  # only needed to resume
    except KeyboardInterrupt:
        store.interrupt_run(run_id, "stopped by the user (KeyboardInterrupt)")
        raise
    except Exception as err:
        store.fail_run(run_id, f"{type(err).__name__}: {err}")
        raise
    tasks = [t.label for t in config.tasks]
    return RunResult(run_id, run_dir, config.name, tasks, trained.metrics, trained.baselines, trained.cost)


def new_run_dir(config: TrainConfig, run_dir: Path, *, run_id: str, group_id: str | None) -> None:
    """An empty run directory holding the run's config and its id (whatever was there is removed)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    # Saved with absolute paths, so the run directory evaluates from any working directory.
    saved = with_absolute_paths(config, Path.cwd())
    (run_dir / layout.CONFIG_FILE).write_text(
        yaml.safe_dump(saved.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    (run_dir / RUN_FILE).write_text(json.dumps({"run_id": run_id, "group_id": group_id}), encoding="utf-8")


@dataclass
class TrainedRun:
    """What training and evaluating a run produced, for whoever records it in the store: the same
    process (`mtpeft train`, the local executor) or a study's driver (a Ray worker never opens the store)."""

    metrics: dict[str, dict[str, dict[str, float]]]
    baselines: dict[str, dict[str, dict[str, float]]]
    cost: dict[str, Any]
    data_quality: dict[str, Any]
    details: dict[str, Any]

    def store_fields(self) -> dict[str, Any]:
        """The keyword arguments of RunStore.finish_run."""
        return {
            "metrics": self.metrics,
            "cost": self.cost,
            "baselines": self.baselines,
            "data_quality": self.data_quality,
            "details": self.details,
        }


def train_in_run_dir(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainedRun:
    """Train (from the directory's last checkpoint when `resume`) and evaluate; writes the run directory
    only. `on_checkpoint` is called with each checkpoint once it is complete (a Ray worker copies it to
    the study's storage there)."""
    trainer = MultiTaskTrainer(config, run_dir, progress=progress)
    trainer.on_checkpoint = on_checkpoint
    outcome = trainer.train(resume=resume)
    metrics: dict[str, dict[str, dict[str, float]]] = {"valid": outcome.valid_metrics}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    for split in config.evaluate_splits:
        metrics[split], split_baselines = evaluate_run(
            run_dir, split, baselines=config.baselines, progress=progress
        )
        baselines = baselines or split_baselines
    (run_dir / layout.COST_FILE).write_text(json.dumps(outcome.cost, indent=2), encoding="utf-8")
    # The gradient-conflict summary goes in the run's details (its measurements: the run folder's JSON);
    # so does the validation curve against cumulative compute (also in RUN_DIR/curve.json).
    details: dict[str, Any] = {"curve": outcome.curve}
    if outcome.grad_conflict:
        details["grad_conflict"] = outcome.grad_conflict
    (run_dir / layout.CURVE_FILE).write_text(json.dumps(outcome.curve, indent=1), encoding="utf-8")
    return TrainedRun(metrics, baselines, outcome.cost, _data_quality(trainer), details)


def _read_run_file(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _data_quality(trainer: MultiTaskTrainer) -> dict[str, Any]:
    """Dataset-quality headline numbers per task (they go beside every result in reports)."""
    try:
        from mtpeft.data.inspect import inspect_task
    except ImportError:
        return {}
    quality = {}
    for name, task in trainer.tasks.items():
        try:
            quality[name] = inspect_task(task.spec, task.entry.data).summary()
        except MtpeftError as err:
            quality[name] = {"error": str(err)}
    return quality
