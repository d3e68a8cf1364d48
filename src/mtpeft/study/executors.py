"""Where a study's runs execute: `local` (one after the other, default) or `ray` (one Ray task per run).

Ray does the scheduling (resources per run from the study's `ray:` block); there is no scheduler here.
With Ray on several machines, the workspace (runs/ and mtpeft.sqlite) must be on storage they share.
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
    ray = _import_ray()
    ray.init(address=spec.ray.address, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=spec.ray.num_cpus, num_gpus=spec.ray.num_gpus)(execute_job)
    # Progress bars from parallel workers would interleave: off under Ray.
    return ray.get([remote.remote(job, run_fn, False) for job in jobs])
