"""One run on a cluster node (the body of a study's Ray task): trained in the node's scratch folder, its
run directory copied to the study's storage, its outcome handed back. A node never opens the store: the
driver records what this returns (study/cluster.py).

When Ray runs the task again on another node (its first node died), the run directory is pulled from
storage and training resumes from its last checkpoint there.
"""

from __future__ import annotations

import json
import platform
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.study.storage import Storage, scratch_dir

ATTEMPTS_FILE = "attempts.json"  # in the run directory: each node that trained it, and where it resumed
MAX_ATTEMPTS = 2  # as the local executor: continue from the last checkpoint, then once from step 0


@dataclass(frozen=True)
class NodeTask:
    config: TrainConfig  # one run (a single-task run already split off), paths absolute
    run_id: str  # the store row the driver opened for it
    run_name: str  # its directory name under STORAGE/runs/
    group_id: str | None
    storage: Storage


@dataclass
class NodeResult:
    status: str  # "finished" | "failed"
    attempts: int  # in-task attempts on the last node (Ray's retries on other nodes are in `nodes`)
    node: dict[str, str]  # the node that finished it (or failed it): node_id, ip, host
    nodes: list[dict[str, Any]] = field(default_factory=list)  # every attempt, from ATTEMPTS_FILE
    trained: Any = None  # training.run.TrainedRun when finished
    error: str | None = None

    @property
    def resumed_from_step(self) -> int | None:
        """The checkpoint step the last attempt resumed from (None: it trained from step 0)."""
        return self.nodes[-1].get("resumed_from_step") if self.nodes else None

    def details(self) -> dict[str, Any]:
        """What the store keeps of where the run trained (RunRecord.details['node'])."""
        return self.node | {"attempts": self.nodes, "resumed_from_step": self.resumed_from_step}


def this_node() -> dict[str, str]:
    """Ray's id and address of the node this runs on (its hostname too: several nodes may share one)."""
    import ray

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "host": platform.node(),
    }


def train_on_node(task: NodeTask) -> NodeResult:
    """Train and evaluate one run here; any error is handed back (a node death is Ray's to retry)."""
    node = this_node()
    # A folder of this task's own, not one per run: a run's earlier attempt whose driver or node was lost
    # may not be dead yet (Ray kills it moments later) and must not share our files or run lock.
    run_dir = scratch_dir(node["node_id"]) / uuid.uuid4().hex[:12] / task.run_name
    error, attempts = None, []
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                attempts = _prepare(task, run_dir, node, fresh=attempt > 1)
                trained = _train(task, run_dir, resume=attempts[-1]["resumed_from_step"] is not None)
                return NodeResult("finished", attempt, node, attempts, trained)
            except Exception as err:  # this run failed, not the study: the driver records it
                error = f"{type(err).__name__}: {err}"
        return NodeResult("failed", MAX_ATTEMPTS, node, attempts, error=error)
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)  # what is worth keeping is in storage


def _prepare(task: NodeTask, run_dir: Path, node: dict[str, str], *, fresh: bool) -> list[dict[str, Any]]:
    """The run directory in scratch: this run's own from storage (same run id) unless `fresh`, else a new
    one. Records this attempt in ATTEMPTS_FILE and copies that to storage at once (it says where the
    run is being trained)."""
    from mtpeft.training.run import new_run_dir

    shutil.rmtree(run_dir, ignore_errors=True)
    pulled = not fresh and task.storage.pull_run(task.run_name, run_dir) and _run_id(run_dir) == task.run_id
    if pulled:
        checkpoint = layout.latest_checkpoint(run_dir)
        step = _checkpoint_step(checkpoint) if checkpoint is not None else 0
        attempts = _read_attempts(run_dir)
    else:
        task.storage.remove_run(task.run_name)
        new_run_dir(task.config, run_dir, run_id=task.run_id, group_id=task.group_id)
        step, attempts = None, []
    attempts.append(node | {"resumed_from_step": step})
    (run_dir / ATTEMPTS_FILE).write_text(json.dumps(attempts, indent=1), encoding="utf-8")
    beside = [run_dir / n for n in (ATTEMPTS_FILE, layout.RUN_FILE, layout.CONFIG_FILE)]
    task.storage.push_files(run_dir, task.run_name, beside)
    return attempts


def _train(task: NodeTask, run_dir: Path, *, resume: bool) -> Any:
    from mtpeft.training.preflight import preflight
    from mtpeft.training.run import train_in_run_dir

    preflight(task.config)

    def sync(checkpoint: Path) -> None:
        task.storage.push_checkpoint(run_dir, task.run_name, checkpoint)

    trained = train_in_run_dir(task.config, run_dir, resume=resume, progress=False, on_checkpoint=sync)
    task.storage.push_results(run_dir, task.run_name)
    return trained


def _run_id(run_dir: Path) -> str | None:
    path = run_dir / layout.RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("run_id") if path.is_file() else None


def _checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step-"))


def _read_attempts(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / ATTEMPTS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
