"""One trainer per run: a second process training the same run stops at once and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import RunLocked
from mtpeft.layout import run_dir_for
from mtpeft.store import RunStore
from mtpeft.training.run_lock import lock_paths, run_lock

# The first trainer, slowed down deterministically: after its first optimiser step it waits for the
# test's "go" file (the lock and everything else run as in `mtpeft train`).
HOLD_AFTER_FIRST_STEP = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import mtpeft.training.trainer as trainer
    from mtpeft.cli.main import main

    go, waiting = Path(sys.argv[1]), Path(sys.argv[2])
    inject = trainer._fault_injection

    def hold() -> None:
        inject()
        if not go.exists():
            waiting.touch()
            deadline = time.monotonic() + 120
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    trainer._fault_injection = hold
    sys.argv = ["mtpeft", *sys.argv[3:]]
    main()
    """
)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the first trainer exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def test_a_second_lock_on_the_same_run_names_the_holder_and_the_lock_is_released_after(tmp_path):
    run_dir = tmp_path / "runs" / "r-abc"
    lock_file, owner_file = lock_paths(run_dir)
    with run_lock(run_dir, "r"):
        assert f'"pid": {os.getpid()}' in owner_file.read_text()
        with pytest.raises(RunLocked) as caught, run_lock(run_dir, "r"):
            pass
        assert str(caught.value) == (
            f"run r is already being trained by process {os.getpid()} on {os.uname().nodename} "
            f"(lock {lock_file}); wait for it or stop it"
        )
    assert not owner_file.exists() and not run_dir.exists()  # the run's directory is not touched
    with run_lock(run_dir, "r"):  # released: the next trainer gets it
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "runs" / "r-abc"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mtpeft.training.run_lock import run_lock\n"
            "with run_lock(Path(sys.argv[1]), 'r'):\n    print('locked', flush=True); time.sleep(120)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"by process {holder.pid} on "), run_lock(run_dir, "r"):
            pass
    finally:
        holder.kill()  # SIGKILL: no finally block of the holder runs
        holder.wait()
    with run_lock(run_dir, "r"):  # the kernel dropped the dead holder's lock
        pass


def test_two_processes_training_one_run_make_one_run_and_one_already_running_message(
    tmp_path, capsys, monkeypatch
):
    from mtpeft.cli.main import main

    data = write_fixture_dataset("devign-jsonl", tmp_path / "data", n_per_split=16)
    raw = {
        "name": "twice",
        "model": "tiny-bert",
        "method": "lora",
        "tasks": [{"task": "vulnerability", "data": str(data), "batch_size": 8, "max_length": 32}],
        "max_steps": 4,
        "eval_every": 4,
        "workspace": str(tmp_path / "ws"),
        "baselines": False,
    }
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    go, waiting = tmp_path / "go", tmp_path / "waiting"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_AFTER_FIRST_STEP, str(go), str(waiting)]
        + ["train", str(config_path), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    try:
        _wait_for(waiting, first)  # the first trainer holds the lock, after its first step
        monkeypatch.setattr(sys, "argv", ["mtpeft", "train", str(config_path), "--no-progress"])
        with pytest.raises(SystemExit) as second:  # the second process: this one
            main()
        store = RunStore(tmp_path / "ws" / "mtpeft.sqlite")
        assert [r.status for r in store.list_runs()] == ["running"]  # the first one's, untouched
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)

    lock_file, _ = lock_paths(run_dir_for(validate_config(raw)))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert second.value.code == 2
    assert errors == [
        f"error: run twice is already being trained by process {first.pid} on {os.uname().nodename} "
        f"(lock {lock_file}); wait for it or stop it"
    ]
    assert first.returncode == 0, err[-2000:]
    runs = RunStore(tmp_path / "ws" / "mtpeft.sqlite").list_runs()
    assert [(r.status, r.error) for r in runs] == [("finished", None)]
    assert "already being trained" not in out + err
