"""Studies on a Ray cluster of separate node processes: a head and worker nodes, each with its own scratch
folder, run directories in storage given as an fsspec URL, the store written by the driver alone.

One worker node is killed while a run on it is mid-way: Ray runs it again on the other node, which resumes
from the checkpoint in storage. Kept small (tiny-bert, 6 steps a run, one CPU per node) for 2-core CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import ConfigError
from mtpeft.manifest import MANIFEST_FILE
from mtpeft.store import RunStore
from mtpeft.study.node import ATTEMPTS_FILE
from mtpeft.study.runner import run_study, store_path
from mtpeft.study.spec import StudySpec, parse_study
from mtpeft.study.storage import SCRATCH_ENV, SYNC_DELAY_ENV

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'mtpeft[ray]' (CI installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.timeout(600)

STEPS = 6  # checkpoints at steps 2 and 4 (none at the last step: the run ends there)
# Ray declares a silent node dead after health_check_failure_threshold x period: seconds, not minutes.
FAST_NODE_DEATH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}


SLOW_SYNC = {SYNC_DELAY_ENV: "1.5"}


def _node_env(scratch: Path, **extra: str) -> dict[str, str]:
    return {SCRATCH_ENV: str(scratch), "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node (no CPUs: it schedules, trains nothing) and one worker node, as separate processes;
    tests add nodes. Shut down whatever happens."""
    root = tmp_path_factory.mktemp("ray-cluster")
    head_args = {"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_NODE_DEATH}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        # Both worker nodes wait a moment after each checkpoint upload: a window to kill something mid-run.
        node_b = cluster.add_node(num_cpus=1, env_vars=_node_env(root / "scratch-b", **SLOW_SYNC))
        yield cluster, node_b, root
    finally:
        ray.shutdown()
        cluster.shutdown()


def _spec(
    root: Path,
    name: str,
    storage: str,
    address: str,
    *,
    seeds: list[int],
    task_sets=("single", "all"),
    **extra,
) -> StudySpec:
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", root / "data", n_per_split=16),
        "code-search": write_fixture_dataset("codesearchnet", root / "data", n_per_split=16),
    }
    return parse_study(
        {
            "name": name,
            "workspace": str(root / f"ws-{name}"),
            "executor": "ray",
            "ray": {"address": address, "num_cpus": 1},
            "storage": storage,
            **extra,
            "base": {
                "lr": 0.005,
                "baselines": False,
                "max_steps": STEPS,
                "eval_every": 2,
                "save_every": 2,
            },
            "tasks": [
                {"task": t, "data": str(p), "batch_size": 4, "max_length": 32} for t, p in data.items()
            ],
            "grid": {
                "models": ["tiny-bert"],
                "methods": ["lora"],
                "task_sets": list(task_sets),
                "seeds": seeds,
            },
        }
    )


def _steps(log: Path) -> list[int]:
    return [e["step"] for e in map(json.loads, log.read_text().splitlines()) if "loss" in e]


def _kill_mid_run(cluster: Cluster, node, storage: Path, killed: dict, stop: threading.Event) -> None:
    """Watch storage: once `node` has finished a run (so runs finish on both nodes) and another run of
    its has just copied a checkpoint there (the node waits SLOW_SYNC after it), kill the node: all its
    processes, no goodbye."""
    while not stop.is_set():
        finished_here, checkpointed = 0, None
        for run in (storage / "runs").glob("*"):
            try:
                attempts = json.loads((run / ATTEMPTS_FILE).read_text())
            except (OSError, ValueError):  # not there yet, or being copied
                continue
            if attempts[-1]["node_id"] != node.node_id:
                continue
            if (run / "cost.json").is_file():
                finished_here += 1
            elif any(time.time() - m.stat().st_mtime < 1 for m in run.glob(f"checkpoints/*/{MANIFEST_FILE}")):
                checkpointed = run.name
        if finished_here and checkpointed:
            cluster.remove_node(node, allow_graceful=False)
            killed["run"] = checkpointed
            return
        time.sleep(0.05)


def test_study_on_two_worker_nodes_survives_a_killed_node(cluster, tmp_path):
    cluster, node_b, root = cluster
    node_a = cluster.add_node(num_cpus=1, env_vars=_node_env(root / "scratch-a", **SLOW_SYNC))
    storage = tmp_path / "storage"
    spec = _spec(tmp_path, "kill", f"file://{storage}", cluster.address, seeds=[0, 1])
    killed: dict[str, str] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_mid_run, args=(cluster, node_a, storage, killed, stop))
    watcher.start()
    try:
        outcomes = run_study(spec, progress=False)
    finally:
        stop.set()
        watcher.join()
    assert killed, "node A was never killed mid-run"
    assert [o.status for o in outcomes] == ["trained"] * 6, [o.error for o in outcomes]

    runs = RunStore(store_path(spec)).list_runs(study="kill")
    assert len(runs) == 6 and [r.status for r in runs] == ["finished"] * 6
    assert Counter(r.config["key"] for r in runs).most_common(1)[0][1] == 1  # each run recorded once
    nodes = Counter(r.details["node"]["node_id"] for r in runs)
    assert set(nodes) == {node_a.node_id, node_b.node_id}, nodes  # runs finished on both worker nodes

    [victim] = [r for r in runs if Path(r.run_dir).name == killed["run"]]
    attempts = victim.details["node"]["attempts"]
    assert [a["node_id"] for a in attempts] == [node_a.node_id, node_b.node_id]
    assert attempts[0]["resumed_from_step"] is None and victim.details["node"]["resumed_from_step"] >= 2
    # Resumed from its checkpoint, not from step 0: the steps up to it were trained once, on node A.
    steps = _steps(Path(victim.run_dir) / "train.log")
    resumed = victim.details["node"]["resumed_from_step"]
    assert [s for s in steps if s <= resumed] == list(range(1, resumed + 1))
    assert sorted(set(steps)) == list(range(1, STEPS + 1))
    for run in runs:  # everything in storage, nothing in the driver's workspace but the store
        assert Path(run.run_dir).parent == storage / "runs"
        assert (Path(run.run_dir) / "best").is_dir() and not (Path(run.run_dir) / "checkpoints").exists()
    assert not (Path(spec.workspace) / "runs").exists()
    for scratch in ("scratch-a", "scratch-b"):  # each node trained in its own scratch folder
        assert (root / scratch).is_dir()

    again = run_study(spec, progress=False)  # the study again: nothing left to train
    assert [o.status for o in again] == ["skipped"] * 6


@pytest.fixture
def s3_server():
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.mark.usefixtures("cluster")
def test_a_killed_driver_loses_only_the_run_in_flight_which_resumes_from_s3(tmp_path, s3_server):
    """Storage on S3 (a moto server on loopback); the driver SIGKILLed mid-run, then the study again."""
    import s3fs

    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    url = "s3://mtpeft-test/study"
    # One run (both tasks): the file:// study above covers the rest; this is the S3 round trip. The
    # driver joins with `address: auto`, as on a machine of a cluster started with `ray start`.
    spec = _spec(tmp_path, "s3", url, "auto", seeds=[0], task_sets=["all"], storage_options=options)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    driver = subprocess.Popen(
        [sys.executable, "-m", "mtpeft.cli.main", "study", str(path), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    s3 = s3fs.S3FileSystem(**options)
    try:
        deadline = time.monotonic() + 300
        while not s3.glob(f"{url}/runs/*/checkpoints/step-*/{MANIFEST_FILE}"):
            assert driver.poll() is None and time.monotonic() < deadline, "no checkpoint reached S3"
            time.sleep(0.1)
            s3.invalidate_cache()
    finally:
        driver.kill()
        driver.wait()
    store = RunStore(store_path(spec))
    assert [r.status for r in store.list_runs(study="s3")] == ["interrupted"]  # its driver is gone

    outcomes = run_study(spec, progress=False)
    assert [(o.status, o.previous) for o in outcomes] == [("trained", "interrupted")], outcomes
    [run] = store.list_runs(study="s3")  # the same row, finished: no second one
    assert run.status == "finished" and run.run_dir.startswith(f"{url}/runs/")
    attempts = run.details["node"]["attempts"]
    assert len(attempts) == 2 and attempts[0]["resumed_from_step"] is None
    assert attempts[1]["resumed_from_step"] >= 2  # from its checkpoint in S3, not from step 0
    s3.invalidate_cache()  # this process listed the checkpoints above
    assert s3.exists(f"{run.run_dir}/best") and not s3.exists(f"{run.run_dir}/checkpoints")
    log = s3.cat_file(f"{run.run_dir}/train.log").decode().splitlines()
    steps = [e["step"] for e in map(json.loads, log) if "loss" in e]
    assert steps.count(1) == 1 and sorted(set(steps)) == list(range(1, STEPS + 1))


def test_unreachable_cluster_names_the_field(tmp_path):
    ray.shutdown()  # a driver still joined to a cluster would be taken as joined
    spec = _spec(tmp_path, "nowhere", f"file://{tmp_path}/storage", "127.0.0.1:1", seeds=[0])
    with pytest.raises(ConfigError, match=r"field 'ray.address'.*ray start --head"):
        run_study(spec, progress=False)
