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
from mtpeft.disk import disk_full, folder_bytes, is_disk_full
from mtpeft.errors import DiskFull, MtpeftError
from mtpeft.evaluation.run_eval import evaluate_run
from mtpeft.layout import RUN_FILE, check_run_dir, checkpoint_dirs, read_run_file, run_dir_for, split_single
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
    if resume:
        check_run_dir(run_dir)  # before the store is touched: a refused resume changes nothing
    previous = read_run_file(run_dir) if resume else None
    if previous is not None and store.get(previous["run_id"]).status == "finished":
        record = store.get(previous["run_id"])
        return RunResult(
            record.run_id, run_dir, config.name, record.tasks, record.metrics, record.baselines, record.cost
        )
    if previous is not None:
        run_id = previous["run_id"]
        store.resume_run(run_id)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
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
    try:
        if previous is None:  # inside the try: a failed write (a full disk) still ends the row
            _write_run_files(config, run_dir, run_id, group_id)
        trainer = MultiTaskTrainer(config, run_dir, progress=progress)
        outcome = trainer.train(resume=previous is not None)
        metrics: dict[str, dict[str, dict[str, float]]] = {"valid": outcome.valid_metrics}
        baselines: dict[str, dict[str, dict[str, float]]] = {}
        for split in config.evaluate_splits:
            metrics[split], split_baselines = evaluate_run(
                run_dir, split, baselines=config.baselines, progress=progress
            )
            baselines = baselines or split_baselines
        quality = _data_quality(trainer)
        (run_dir / layout.COST_FILE).write_text(json.dumps(outcome.cost, indent=2), encoding="utf-8")
        # The gradient-conflict summary goes in the run's details (its measurements: the run folder's JSON);
        # so does the validation curve against cumulative compute (also in RUN_DIR/curve.json).
        details: dict[str, Any] = {"curve": outcome.curve}
        if outcome.grad_conflict:
            details["grad_conflict"] = outcome.grad_conflict
        (run_dir / layout.CURVE_FILE).write_text(json.dumps(outcome.curve, indent=1), encoding="utf-8")
        store.finish_run(
            run_id,
            metrics=metrics,
            cost=outcome.cost,
            baselines=baselines,
            data_quality=quality,
            details=details,
        )
        shutil.rmtree(run_dir / layout.CHECKPOINTS_DIR, ignore_errors=True)  # only needed to resume
    except KeyboardInterrupt:
        _remove_partial_writes(run_dir)
        _record_end(lambda: store.interrupt_run(run_id, "stopped by the user (KeyboardInterrupt)"), None)
        raise
    except Exception as err:
        _remove_partial_writes(run_dir)  # first: it frees the space a failed write took, for the store
        error = _disk_full(err, config, run_dir) if is_disk_full(err) else err
        _record_end(lambda: store.fail_run(run_id, f"{type(error).__name__}: {error}"), error)
        if error is not err:
            raise error from err
        raise
    return RunResult(
        run_id, run_dir, config.name, [t.label for t in config.tasks], metrics, baselines, outcome.cost
    )


def _write_run_files(config: TrainConfig, run_dir: Path, run_id: str, group_id: str | None) -> None:
    # Saved with absolute paths, so the run directory evaluates from any working directory.
    saved = with_absolute_paths(config, Path.cwd())
    (run_dir / layout.CONFIG_FILE).write_text(
        yaml.safe_dump(saved.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    (run_dir / RUN_FILE).write_text(json.dumps({"run_id": run_id, "group_id": group_id}), encoding="utf-8")


def _remove_partial_writes(run_dir: Path) -> None:
    """A checkpoint or best/ cut short (their `.tmp` folders): never kept, never resumed from."""
    partial = [*(run_dir / layout.CHECKPOINTS_DIR).glob("*.tmp"), run_dir / (layout.BEST_DIR + ".tmp")]
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)


def _disk_full(err: Exception, config: TrainConfig, run_dir: Path) -> DiskFull:
    """A write of the run failed for want of space (a log line, best/, cost.json...): one message with
    the space to free, estimated from the run's largest saved folder (a checkpoint, else best/)."""
    if isinstance(err, DiskFull):
        return err
    saved = [*checkpoint_dirs(run_dir)[:1], run_dir / layout.BEST_DIR]
    needed = max((folder_bytes(path) for path in saved), default=0) or None
    return disk_full(
        f"a file of run {config.name}",
        run_dir,
        needed=needed,
        then="continue the run from its last checkpoint: mtpeft train CONFIG --resume",
    )


def _record_end(write: Callable[[], None], error: BaseException | None) -> None:
    """Record how the run ended. When the store cannot take it (the disk is still full, the store is
    damaged), the row stays 'running', which the store shows as 'interrupted' once this process ends;
    the user gets the run's own error, with the store's problem added, as one message."""
    try:
        write()
    except MtpeftError as store_error:
        if error is None:  # Ctrl-C: the interruption itself is what the user is told about
            return
        if isinstance(error, MtpeftError):
            error.args = (f"{error}; the store could not record it either ({store_error})",)


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
