"""Run orchestration: run directories, the store, single-mode groups, train-then-evaluate.

With several processes (`torchrun`, `accelerate launch`) every process trains and evaluates its share,
but only the main one (rank 0) holds the run lock, writes the store, the run directory and the logs:
one run, one store row, whatever the number of processes. It tells the others what to do (resume or
not, the result) through the process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtpeft import layout
from mtpeft.config import TrainConfig, with_absolute_paths
from mtpeft.disk import disk_full, folder_bytes, is_disk_full
from mtpeft.errors import DiskFull, MtpeftError
from mtpeft.evaluation.calibrate_run import calibrate_run
from mtpeft.evaluation.run_eval import evaluate_run
from mtpeft.layout import RUN_FILE, check_run_dir, checkpoint_dirs, read_run_file, run_dir_for, split_single
from mtpeft.modeling.distributed import Shard, broadcast_object, cpu_only
from mtpeft.store import RunStore
from mtpeft.training.affinity import check_supported as check_affinity_supported
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
    shard = join_processes()
    check_batches_divide(config, shard)
    for run in _runs_of(config):  # single mode: one task per run, which measures no affinity
        check_affinity_supported(run, shard)
    with _sigterm_as_interrupt(shard):
        if shard.rank != 0:
            return [_follow(sub, shard) for sub in _runs_of(config)]
        store = store_for(config)
        group_id = None if config.mode == "multi" else uuid.uuid4().hex[:12]
        return [
            _run_one(sub, store, group_id=group_id, resume=resume, progress=progress, shard=shard)
            for sub in _runs_of(config)
        ]


@contextmanager
def _sigterm_as_interrupt(shard: Shard) -> Iterator[None]:
    """With several processes, a launcher stops the others with SIGTERM when one dies: take it as an
    interruption (the run is recorded `interrupted` and resumes), not as a silent death that would
    leave its store row `running`."""
    if not shard.several or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _runs_of(config: TrainConfig) -> list[TrainConfig]:
    return [config] if config.mode == "multi" else split_single(config)


def join_processes() -> Shard:
    """This process's place among those a launcher started (one, without a launcher).

    `torchrun` and `accelerate launch` set WORLD_SIZE; accelerate's PartialState joins their process
    group (gloo on CPUs, NCCL on GPUs), the one the trainer's Accelerator then uses. The main process
    says how many there are, so that a launch that quietly started one process is seen at once."""
    _refuse_single_process_launch()
    from mtpeft.modeling.fsdp import claim_accelerate_switch, refuse_deepspeed

    refuse_deepspeed()  # before any process group: accelerate on CPUs would quietly run plain DDP
    claim_accelerate_switch()  # mtpeft shards (modeling/fsdp.py); accelerate's PartialState must not
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=cpu_only())
        shard = Shard.current()
        if shard.rank == 0:
            print(
                f"{shard.size} processes ({state.backend}); every batch is divided among them",
                file=sys.stderr,
                flush=True,
            )
        return shard
    return Shard.current()


def is_main_process() -> bool:
    return Shard.current().rank == 0


def _refuse_single_process_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts ONE process unless MPI is set up (its simple
    launcher), which is easy to take for a working N-process run: refuse it and say what works."""
    if "WORLD_SIZE" in os.environ or os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true":
        return
    asked = _launcher_processes()
    if asked is not None and asked > 1:
        raise MtpeftError(
            f"accelerate launch was asked for {asked} processes on CPUs but started one (its CPU launcher "
            "needs MPI). Use torchrun, which needs nothing more: torchrun --nproc_per_node "
            f"{asked} -m mtpeft.cli.main train CONFIG (gloo is chosen for CPUs)"
        )


def _launcher_processes() -> int | None:
    """--num_processes of the `accelerate launch` command that started this process, if it is one."""
    import psutil

    try:
        words = psutil.Process().parent().cmdline()
    except (psutil.Error, AttributeError):
        return None
    if not any(w.endswith("accelerate") for w in words) or "launch" not in words:
        return None
    for i, word in enumerate(words):
        for flag in ("--num_processes", "--num-processes"):
            if word == flag and i + 1 < len(words) and words[i + 1].isdigit():
                return int(words[i + 1])
            if word.startswith(flag + "=") and word.split("=", 1)[1].isdigit():
                return int(word.split("=", 1)[1])
    return None


def check_batches_divide(config: TrainConfig, shard: Shard) -> None:
    """Every process needs at least one example of every batch: refuse before anything is written."""
    if not shard.several:
        return
    for index, entry in enumerate(config.tasks):
        if entry.batch_tokens is None and entry.batch_size < shard.size:
            raise MtpeftError(
                f"tasks.{index}.batch_size is {entry.batch_size} but {shard.size} processes share each "
                f"batch (the batch size is the global one, divided among them): set it to at least "
                f"{shard.size}, or launch fewer processes"
            )


def _run_one(
    config: TrainConfig, store: RunStore, *, group_id: str | None, resume: bool, progress: bool, shard: Shard
) -> RunResult:
    run_dir = run_dir_for(config)
    # Taken before the run's directory or store row is touched: a second process training the same
    # run stops here (RunLocked) and changes nothing of the first one's run. With several processes
    # only the main one takes it (if it cannot, it exits, and the launcher stops the others).
    with run_lock(run_dir, config.name):
        result = _run_locked(
            config, store, run_dir, group_id=group_id, resume=resume, progress=progress, shard=shard
        )
    return broadcast_object(result)


def _follow(config: TrainConfig, shard: Shard) -> RunResult:
    """A process other than the main one: train and evaluate its share as the main one says."""
    run_dir = run_dir_for(config)
    plan = broadcast_object(None)
    if plan["resume"] is not None:
        trainer = MultiTaskTrainer(config, run_dir, progress=False)
        trainer.train(resume=plan["resume"])
        calibrate_run(run_dir, progress=False, shard=shard)
        for split in config.evaluate_splits:
            evaluate_run(run_dir, split, baselines=False, progress=False, shard=shard)
    return broadcast_object(None)


def _run_locked(
    config: TrainConfig,
    store: RunStore,
    run_dir: Path,
    *,
    group_id: str | None,
    resume: bool,
    progress: bool,
    shard: Shard,
) -> RunResult:
    if resume:
        check_run_dir(run_dir)  # before the store is touched: a refused resume changes nothing
    previous = read_run_file(run_dir) if resume else None
    if previous is not None and store.get(previous["run_id"]).status == "finished":
        record = store.get(previous["run_id"])
        broadcast_object({"resume": None})  # nothing to train
        return RunResult(
            record.run_id, run_dir, config.name, record.tasks, record.metrics, record.baselines, record.cost
        )
    if previous is not None:
        run_id = previous["run_id"]
        store.resume_run(run_id)
    else:
        run_id = start_run_row(store, config, group_id=group_id, run_dir=str(run_dir))
    try:
        if previous is None:  # inside the try: a failed write (a full disk) still ends the row
            new_run_dir(config, run_dir, run_id=run_id, group_id=group_id)
        broadcast_object({"resume": previous is not None})  # the run directory is ready for everyone
        trained = train_in_run_dir(
            config, run_dir, resume=previous is not None, progress=progress, shard=shard
        )
        store.finish_run(run_id, **trained.store_fields())
        shutil.rmtree(run_dir / layout.CHECKPOINTS_DIR, ignore_errors=True)  # only needed to resume
    except KeyboardInterrupt:
        _remove_partial_writes(run_dir)
        _record_end(lambda: store.interrupt_run(run_id, "stopped by the user (KeyboardInterrupt)"), None)
        raise
    except Exception as err:
        _remove_partial_writes(run_dir)  # first: it frees the space a failed write took, for the store
        if shard.several and _peer_lost(err):  # another process died (killed, out of memory): resumable
            reason = f"another process of the run stopped ({_first_line(err)})"
            _record_end(lambda: store.interrupt_run(run_id, reason), err)
            raise
        error = _disk_full(err, config, run_dir) if is_disk_full(err) else err
        _record_end(lambda: store.fail_run(run_id, f"{type(error).__name__}: {error}"), error)
        if error is not err:
            raise error from err
        raise
    tasks = [t.label for t in config.tasks]
    return RunResult(run_id, run_dir, config.name, tasks, trained.metrics, trained.baselines, trained.cost)


def start_run_row(store: RunStore, config: TrainConfig, *, group_id: str | None, run_dir: str) -> str:
    """The store row of a new run (`mtpeft train`, and a study's driver for a Ray node's run)."""
    return store.start_run(
        name=config.name,
        study=config.study,
        group_id=group_id,
        mode=config.mode,
        model=config.model,
        method=config.method,
        tasks=[t.label for t in config.tasks],
        seed=config.seed,
        config=config.hashable() | {"key": config.run_key()},
        run_dir=run_dir,
    )


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
    shard: Shard | None = None,
) -> TrainedRun:
    """Train (from the directory's last checkpoint when `resume`) and evaluate; writes the run directory
    only. `on_checkpoint` is called with each checkpoint once it is complete (a Ray worker copies it to
    the study's storage there)."""
    trainer = MultiTaskTrainer(config, run_dir, progress=progress)
    trainer.on_checkpoint = on_checkpoint
    outcome = trainer.train(resume=resume)
    calibrate_run(run_dir, progress=progress, shard=shard)  # before evaluating: the test ECE is calibrated
    metrics: dict[str, dict[str, dict[str, float]]] = {"valid": outcome.valid_metrics}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    for split in config.evaluate_splits:
        metrics[split], split_baselines = evaluate_run(
            run_dir, split, baselines=config.baselines, progress=progress, shard=shard
        )
        baselines = baselines or split_baselines
    (run_dir / layout.COST_FILE).write_text(json.dumps(outcome.cost, indent=2), encoding="utf-8")
    # The gradient-conflict summary goes in the run's details (its measurements: the run folder's JSON);
    # so does the validation curve against cumulative compute (also in RUN_DIR/curve.json).
    details: dict[str, Any] = {"curve": outcome.curve}
    if outcome.grad_conflict:
        details["grad_conflict"] = outcome.grad_conflict
    if outcome.affinity:  # the lookahead affinity's mean matrix (its measurements: RUN_DIR/affinity.json)
        details["affinity"] = outcome.affinity
    (run_dir / layout.CURVE_FILE).write_text(json.dumps(outcome.curve, indent=1), encoding="utf-8")
    return TrainedRun(metrics, baselines, outcome.cost, _data_quality(trainer), details)


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


def _peer_lost(err: Exception) -> bool:
    """Whether `err` is a collective that failed because another process of the run is gone. gloo
    says so only in its message ("Connection closed by peer"), NCCL and the store with their error
    types; a sibling process that is no longer alive (same launcher) settles it on one machine."""
    import psutil
    import torch.distributed as dist

    if isinstance(err, dist.DistBackendError | dist.DistNetworkError):
        return True
    text = str(err).lower()
    if "by peer" in text or "connection reset" in text or "broken pipe" in text:
        return True
    try:
        siblings = psutil.Process().parent().children()
    except (psutil.Error, AttributeError):
        return False
    alive = [p for p in siblings if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return len(alive) < int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


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
