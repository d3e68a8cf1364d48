"""The driver of a study on Ray: one Ray task per run, the store written here alone, as results arrive.

Ray schedules (resources from the study's `ray:` block), picks nodes and runs a task again on another node
when its node dies (`max_retries`); fsspec reaches the storage. Written here: the store's side, i.e. a row
opened per run before it is submitted (so a driver killed mid-study leaves those rows `running` under its
dead process, shown `interrupted`, and the next `mtpeft study` resumes them from storage) and each outcome
recorded the moment `ray.wait` returns it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from mtpeft.config import with_absolute_paths
from mtpeft.errors import ConfigError, NonFiniteMetric
from mtpeft.layout import run_configs, run_dir_for
from mtpeft.store import RunStore
from mtpeft.study.node import NodeResult, NodeTask, train_on_node
from mtpeft.study.runner import Job, Outcome, store_path
from mtpeft.study.spec import StudySpec
from mtpeft.study.storage import Storage, open_storage

UNREACHABLE = (
    "Start one with `ray start --head` (then `address: auto` on its machines), give HOST:PORT of its head "
    "node, or leave `address` unset for a Ray of this machine alone"
)
PROBE_TIMEOUT_S = 5.0


def connect(ray: Any, address: str | None) -> None:
    """Join the cluster at `address` (None: start a Ray of this machine), naming the field on failure."""
    _probe(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        message = f"could not join the Ray cluster at '{address}' ({err}). {UNREACHABLE}"
        raise ConfigError(message, field="ray.address") from None


def _probe(address: str | None) -> None:
    """Written here because `ray.init` retries an address that does not answer for minutes, silently:
    one TCP connection to HOST:PORT first says at once that nothing listens there."""
    import socket

    if address is None or ":" not in address.removeprefix("ray://"):
        return  # no address, or `auto`: Ray itself says at once when there is no cluster to find
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as err:
        message = f"nothing answers at the Ray cluster address '{address}' ({err}). {UNREACHABLE}"
        raise ConfigError(message, field="ray.address") from None


def study_storage(spec: StudySpec) -> Storage:
    """The study's storage (default: the workspace, a path), checked reachable before anything trains."""
    storage = open_storage(spec.storage or spec.workspace, spec.storage_options)
    storage.check_reachable()
    return storage


def run_on_cluster(ray: Any, jobs: list[Job], spec: StudySpec, storage: Storage) -> list[Outcome]:
    store = RunStore(store_path(spec))
    remote = ray.remote(
        num_cpus=spec.ray.num_cpus,
        num_gpus=spec.ray.num_gpus,
        max_retries=spec.ray.max_retries,  # system failures: the node or the worker process died
        retry_exceptions=False,  # a run's own errors come back in NodeResult, retried there once
        scheduling_strategy="SPREAD",  # runs over every node with room, not packed onto the first
    )(train_on_node)
    outcomes: dict[str, Outcome] = {}
    pending: dict[Any, tuple[Job, str]] = {}
    for job in jobs:
        name, key = job.planned.display_name, job.planned.key
        if job.previous == "finished":
            outcomes[key] = Outcome(name, key, "skipped", previous=job.previous)
        elif job.previous == "running":
            outcomes[key] = Outcome(name, key, "running elsewhere", previous=job.previous)
        else:
            task = _open_run(store, job, storage)
            pending[remote.remote(task)] = (job, task.run_id)
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            job, run_id = pending.pop(ref)
            done = len(outcomes) + 1
            outcomes[job.planned.key] = _record(ray, store, job, run_id, ref, done=done, of=len(jobs))
    except KeyboardInterrupt:
        for ref, (_, run_id) in pending.items():
            store.interrupt_run(run_id, "the study's driver was stopped (KeyboardInterrupt)")
            ray.cancel(ref, force=True)
        raise
    return [outcomes[j.planned.key] for j in jobs]


def _open_run(store: RunStore, job: Job, storage: Storage) -> NodeTask:
    """The store row of a run about to be submitted: its earlier row again (interrupted or failed, so the
    node resumes it from storage), else a new one. Paths made absolute: nodes do not share our cwd."""
    from mtpeft.training.run import start_run_row  # torch: the driver imports it only to record runs

    [config] = run_configs(with_absolute_paths(job.planned.config, Path.cwd()))
    run_name = run_dir_for(config).name
    group_id = uuid.uuid4().hex[:12] if config.mode == "single" else None  # as `mtpeft train` gives
    if job.previous in ("interrupted", "failed") and job.run_id is not None:
        store.resume_run(job.run_id)
        return NodeTask(config, job.run_id, run_name, store.get(job.run_id).group_id, storage)
    run_id = start_run_row(store, config, group_id=group_id, run_dir=storage.run_location(run_name))
    return NodeTask(config, run_id, run_name, group_id, storage)


def _record(ray: Any, store: RunStore, job: Job, run_id: str, ref: Any, *, done: int, of: int) -> Outcome:
    """Write one run's result to the store; a run lost with its node (retries spent) is `interrupted`."""
    from mtpeft.report.console import console, markup_safe

    name, key = job.planned.display_name, job.planned.key
    try:
        result: NodeResult = ray.get(ref)
    except ray.exceptions.RayError as err:
        error = f"lost on the cluster, Ray's retries spent (ray.max_retries): {type(err).__name__}: {err}"
        store.interrupt_run(run_id, error[:2000])
        console.print(f"[red]\\[{done}/{of}] {markup_safe(name)}: {markup_safe(error[:300])}[/red]")
        return Outcome(name, key, "failed", 1, job.previous, error)
    where = f"{result.node['host']} (node {result.node['node_id'][:8]})"
    if result.status == "finished":
        try:
            fields = result.trained.store_fields()
            fields["details"] = fields["details"] | {"node": result.details()}
            store.finish_run(run_id, **fields)
        except NonFiniteMetric as err:
            result.status, result.error = "failed", f"{type(err).__name__}: {err}"
    if result.status != "finished":
        store.fail_run(run_id, result.error or "failed")
        console.print(f"[red]\\[{done}/{of}] {markup_safe(name)} failed on {markup_safe(where)}[/red]")
        return Outcome(name, key, "failed", result.attempts, job.previous, result.error)
    resumed = result.resumed_from_step
    note = f", resumed from step {resumed}" if resumed else ""
    console.print(f"[bold]\\[{done}/{of}][/bold] {markup_safe(name)} finished on {markup_safe(where)}{note}")
    return Outcome(name, key, "trained", result.attempts, job.previous)
