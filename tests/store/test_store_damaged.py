"""Item 11 of issue 24: a damaged store (random bytes, truncated, a folder) is one message naming the
file and what to do, from the store itself and from `mtpeft runs` / `mtpeft train`; before, each was a
sqlite3.DatabaseError traceback. The damaged file is left as it is (it is the user's to move)."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from mtpeft.errors import DamagedStore
from mtpeft.store import RunStore


def _good_store_bytes(folder: Path) -> bytes:
    """A real store with some runs, checkpointed into the main file (no -wal beside it)."""
    store = RunStore(folder / "good.sqlite")
    for i in range(20):
        run_id = store.start_run(
            name=f"run-{i}" * 40, study=None, group_id=None, mode="multi", model="m", method="lora",
            tasks=["a"], seed=0, config={"i": i, "pad": "x" * 400}, run_dir=str(folder / f"r{i}"),
        )  # fmt: skip
        store.finish_run(run_id, metrics={"test": {"a": {"acc": 0.5}}}, cost={})
    db = sqlite3.connect(folder / "good.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return (folder / "good.sqlite").read_bytes()


def _damage(workspace: Path, how: str) -> Path:
    path = workspace / "mtpeft.sqlite"
    workspace.mkdir(parents=True, exist_ok=True)
    if how == "random-bytes":
        path.write_bytes(os.urandom(64 * 1024))
    elif how == "folder":
        path.mkdir()
    else:  # truncated at a size: the header alone, or half of its pages
        data = _good_store_bytes(workspace.parent)
        path.write_bytes(data[:100] if how == "truncated-header" else data[: len(data) // 2])
    return path


DAMAGES = ["random-bytes", "truncated-header", "truncated-half", "folder"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_store_is_one_error_naming_the_file_and_what_to_do(tmp_path, how):
    path = _damage(tmp_path / "ws", how)
    with pytest.raises(DamagedStore) as caught:
        RunStore(path)
    message = str(caught.value)
    assert str(path) in message and "Move it aside" in message and "runs' directories" in message


def test_an_empty_store_file_is_an_empty_store_not_damage(tmp_path):
    path = tmp_path / "mtpeft.sqlite"
    path.write_bytes(b"")
    assert RunStore(path).list_runs() == []


def _cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    from mtpeft.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mtpeft", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("how", ["random-bytes", "truncated-half"])
def test_mtpeft_runs_on_a_damaged_store_prints_one_line(tmp_path, how, monkeypatch, capsys):
    path = _damage(tmp_path / "ws", how)
    before = path.read_bytes()
    code, err = _cli(["runs", "--workspace", str(tmp_path / "ws")], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "is not a readable mtpeft results store" in err
    assert path.read_bytes() == before  # the user's file, untouched


def test_mtpeft_train_on_a_damaged_store_writes_no_run(tmp_path, monkeypatch, capsys):
    import yaml

    from mtpeft.data.fixtures import write_fixture_dataset

    data = write_fixture_dataset("devign-jsonl", tmp_path / "data", n_per_split=8)
    workspace = tmp_path / "ws"
    _damage(workspace, "random-bytes")
    config = {
        "name": "damaged-store", "model": "tiny-bert", "method": "lora", "max_steps": 1,
        "tasks": [{"task": "vulnerability", "data": str(data), "batch_size": 4, "max_length": 32}],
        "workspace": str(workspace), "baselines": False,
    }  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, err = _cli(["train", str(tmp_path / "train.yaml"), "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "Move it aside" in err and "Traceback" not in err, err
    assert not (workspace / "runs").exists()
