"""Where a study's runs execute: `local` (one after the other, default) or `ray` (one Ray task per run).

Ray does the scheduling (resources per run from the study's `ray:` block); there is no scheduler here.
Under Ray, nodes never touch the store (the driver records each outcome, study/cluster.py) and run
directories go to the study's `storage` (a shared path or an fsspec URL, study/storage.py).
"""

from __future__ import annotations

from collections.abc import Callable

from mtpeft.errors import ConfigError
from mtpeft.study.runner import Job, Outcome, RunFn, execute_job
from mtpeft.study.spec import StudySpec

Executor = Callable[[list[Job], RunFn, StudySpec, bool], list[Outcome]]
EXECUTORS: dict[str, Executor] = {}


def register_executor(name: str) -> Callable[[Executor], Executor]:
    def wrap(executor: Executor) -> Executor:
        EXECUTORS[name] = executor
        return executor

    return wrap


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS:
        raise ConfigError(
            f"unknown executor '{name}'; choose one of: {', '.join(EXECUTORS)}", field="executor"
        )
    return EXECUTORS[name]


@register_executor("local")
def run_locally(jobs: list[Job], run_fn: RunFn, spec: StudySpec, progress: bool) -> list[Outcome]:
    from mtpeft.report.console import console, markup_safe

    if spec.storage is not None:
        raise ConfigError(
            "`storage` is where the nodes of `executor: ray` put run directories; the local executor "
            "trains in the workspace. Run with --executor ray, or remove `storage`",
            field="storage",
        )

    outcomes = []
    for i, job in enumerate(jobs, 1):
        if job.previous != "finished":  # a long study shows where it is, progress bars or not
            console.print(f"[bold]\\[{i}/{len(jobs)}][/bold] {markup_safe(job.planned.display_name)}")
        outcomes.append(execute_job(job, run_fn, progress))
    return outcomes


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            "executor 'ray' needs Ray, which is not installed: pip install 'mtpeft[ray]'", field="executor"
        ) from err
    return ray


@register_executor("ray")
def run_on_ray(jobs: list[Job], run_fn: RunFn, spec: StudySpec, progress: bool) -> list[Outcome]:
    """Each run a Ray task running study.node.train_on_node (`run_fn` is the local executor's: a node
    trains without the store, so it runs its own function); progress bars off, they would interleave."""
    ray = _import_ray()
    from mtpeft.study.cluster import connect, run_on_cluster, study_storage

    storage = study_storage(spec)  # before joining: a wrong URL is the quicker thing to report
    connect(ray, spec.ray.address)
    return run_on_cluster(ray, jobs, spec, storage)
