"""Run a study: skip what the store already has, resume what was interrupted, retry a failure once.

For each planned run, by the latest store record with the same run key in this study:
- finished              -> skipped;
- running (live process) -> skipped, reported as running elsewhere;
- interrupted / failed / none -> trained with `run_training(resume=True)`, which continues from the run
  directory's last checkpoint when there is one; if that attempt fails, one retry from scratch
  (`resume=False`). A run that fails twice is reported and the study goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.errors import ConfigError
from mtpeft.store import RunRecord, RunStore
from mtpeft.study.grid import PlannedRun, expand
from mtpeft.study.spec import StudySpec

MAX_ATTEMPTS = 2  # the first attempt and one retry

RunFn = Callable[..., Any]  # run_training(config, *, resume, progress)


def train(config: TrainConfig, *, resume: bool, progress: bool) -> Any:
    """The default run function (imported lazily: torch is only needed when something trains)."""
    from mtpeft.training.run import run_training

    return run_training(config, resume=resume, progress=progress)


@dataclass(frozen=True)
class Job:
    planned: PlannedRun
    previous: str | None  # latest store status for this run key, None if never started
    run_id: str | None = None  # that latest record's id (the Ray driver resumes the same row)


@dataclass(frozen=True)
class Outcome:
    name: str
    key: str
    status: str  # "trained" | "merged" (a merged arm) | "skipped" | "running elsewhere" | "failed"
    attempts: int = 0
    previous: str | None = None
    error: str | None = None


def store_path(spec: StudySpec) -> Path:
    return layout.store_path(spec.workspace)


def latest_by_key(records: list[RunRecord]) -> dict[str, RunRecord]:
    """The most recent record of each run key (records come oldest first)."""
    return {r.config.get("key", r.config_hash): r for r in records}


def plan(spec: StudySpec, store: RunStore | None = None) -> list[Job]:
    """Every run of the grid with what the store knows about it."""
    store = store or RunStore(store_path(spec))
    latest = latest_by_key(store.list_runs(study=spec.name))
    return [
        Job(p, latest[p.key].status, latest[p.key].run_id) if p.key in latest else Job(p, None)
        for p in expand(spec)
    ]


def check_data(jobs: list[Job]) -> None:
    missing = {
        (e.label, e.data)
        for j in jobs
        for e in j.planned.config.tasks
        if e.data and not Path(e.data).exists()
    }
    if missing:
        listed = "; ".join(f"{task}: {data}" for task, data in sorted(missing))
        raise ConfigError(
            f"data folders not found ({listed}). Paths are relative to where you run `mtpeft study` "
            "(the repository root); the offline benchmark is built by `mtpeft data build-default DIR`",
            field="tasks",
        )


def execute_job(job: Job, run_fn: RunFn, progress: bool) -> Outcome:
    name, key = job.planned.display_name, job.planned.key
    if job.previous == "finished":
        return Outcome(name, key, "skipped", previous=job.previous)
    if job.previous == "running":
        return Outcome(name, key, "running elsewhere", previous=job.previous)
    error = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            run_fn(job.planned.config, resume=attempt == 1, progress=progress)
            return Outcome(name, key, "trained", attempt, job.previous)
        except Exception as err:  # any failure of one run must not stop the study
            error = f"{type(err).__name__}: {err}"
    return Outcome(name, key, "failed", MAX_ATTEMPTS, job.previous, error)


def run_study(
    spec: StudySpec,
    *,
    run_fn: RunFn | None = None,
    progress: bool = True,
    executor: str | None = None,
    jobs: list[Job] | None = None,
) -> list[Outcome]:
    """Train every run of the study the store does not have yet, then make its grids' merged arms
    (study/merging.py); one Outcome per planned run and merge."""
    from mtpeft.study.executors import get_executor
    from mtpeft.study.merging import plan_merges, run_merges

    jobs = plan(spec) if jobs is None else jobs
    check_data([j for j in jobs if j.previous != "finished"])
    execute = get_executor(executor or spec.executor)
    outcomes = execute(jobs, run_fn or train, spec, progress)
    merges, _ = plan_merges(spec, [j.planned for j in jobs])  # the grids' merged arms, once trained
    return outcomes + run_merges(spec, merges, progress=progress)
