"""Item 11 of issue 24, a full disk: one message with the space needed (estimated from the checkpoint
size), the run's store row ends `failed`, and no half-written `.tmp` checkpoint or best/ is left.
Before, torch.save's `RuntimeError: basic_ios::clear` was followed by a second traceback, the row stayed
`running` and `step-N.tmp` stayed on disk. Simulated by making each writer fail as it does on a full
disk (after writing part of its file), and, where this process may mount a small tmpfs, for real."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mtpeft.training.trainer as trainer_module
from mtpeft.config import load_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import DiskFull
from mtpeft.layout import run_dir_for
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fixture_dataset("devign-jsonl", tmp_path_factory.mktemp("data"), n_per_split=8)


def _config_file(tmp_path: Path, data: Path, workspace: Path) -> Path:
    config = {
        "name": "full", "model": "tiny-bert", "method": "lora", "max_steps": 4, "eval_every": 2,
        "save_every": 2, "workspace": str(workspace), "baselines": False, "seed": 0,
        "tasks": [{"task": "vulnerability", "data": str(data), "batch_size": 4, "max_length": 32}],
    }  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _failing_write(error: Exception):
    """A writer that puts a few bytes into its file, then fails as a full disk makes it fail."""

    def write(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise error

    return write


def _fails_full(config_file: Path) -> tuple[DiskFull, Path, RunStore]:
    config = load_config(config_file)
    with pytest.raises(DiskFull) as caught:
        run_training(config, progress=False, source=config_file)
    return caught.value, run_dir_for(config), RunStore(Path(config.workspace) / "mtpeft.sqlite")


def _nothing_half_written(run_dir: Path) -> None:
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers


BASIC_IOS = RuntimeError("basic_ios::clear: iostream error")
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def test_torch_save_failing_with_basic_ios_clear_is_one_message(tmp_path, data, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "save", _failing_write(BASIC_IOS))  # the optimiser's state, in a checkpoint
    error, run_dir, store = _fails_full(_config_file(tmp_path, data, tmp_path / "ws"))
    message = str(error)
    assert "checkpoint step-0000002" in message and "MB needed" in message and "--resume" in message
    assert "nothing half-written was kept" in message
    [record] = store.list_runs()
    assert record.status == "failed" and "disk is full" in record.error
    _nothing_half_written(run_dir)


def test_safetensors_failing_with_enospc_is_one_message(tmp_path, data, monkeypatch):
    import accelerate.utils.other

    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", _failing_write(ENOSPC))  # the weights
    error, run_dir, store = _fails_full(_config_file(tmp_path, data, tmp_path / "ws"))
    assert "MB needed" in str(error)
    assert store.list_runs()[0].status == "failed"
    _nothing_half_written(run_dir)


def test_a_full_disk_while_writing_best_leaves_no_best_tmp(tmp_path, data, monkeypatch):
    import mtpeft.modeling.build as build

    monkeypatch.setattr(build, "save_file", _failing_write(ENOSPC))  # the heads, in best/
    error, run_dir, store = _fails_full(_config_file(tmp_path, data, tmp_path / "ws"))
    assert "the disk is full" in str(error) and "--resume" in str(error)
    assert store.list_runs()[0].status == "failed"
    _nothing_half_written(run_dir)
    assert not (run_dir / "best").exists()


def test_the_cli_prints_one_line_with_the_space_needed(tmp_path, data, monkeypatch, capsys):
    import torch

    from mtpeft.cli.main import main

    monkeypatch.setattr(torch, "save", _failing_write(BASIC_IOS))
    config_file = _config_file(tmp_path, data, tmp_path / "ws")
    monkeypatch.setattr(sys, "argv", ["mtpeft", "train", str(config_file), "--no-progress"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "the disk is full" in lines[0] and "MB needed" in lines[0] and "MB free" in lines[0]


def test_a_store_that_cannot_record_the_failure_is_said_in_the_same_message(tmp_path, data, monkeypatch):
    import torch

    def store_full(self, run_id, error):
        raise DiskFull("the disk is full: the results store could not be written")

    monkeypatch.setattr(torch, "save", _failing_write(BASIC_IOS))
    monkeypatch.setattr(RunStore, "fail_run", store_full)
    error, run_dir, _ = _fails_full(_config_file(tmp_path, data, tmp_path / "ws"))
    assert "checkpoint step-0000002" in str(error) and "the store could not record it" in str(error)
    _nothing_half_written(run_dir)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 3 MB tmpfs: room for the run's files and best/ (~0.1 MB), not for a checkpoint (~4 MB)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazily, if a handle is still open


def test_a_really_full_disk_ends_the_run_failed_with_nothing_half_written(tmp_path, data, small_disk):
    monkey = pytest.MonkeyPatch()
    monkey.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
    try:
        error, run_dir, store = _fails_full(_config_file(tmp_path, data, small_disk / "ws"))
    finally:
        monkey.undo()
    assert "MB needed" in str(error) and "free at least" in str(error)
    assert store.list_runs()[0].status == "failed"
    _nothing_half_written(run_dir)
