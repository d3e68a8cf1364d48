"""A study's storage (fsspec): checkpoints copied manifest last, run directories pulled back, clear errors.
No Ray needed: what a node does with storage, on a local directory URL and fsspec's in-memory one."""

from __future__ import annotations

import importlib
import pickle
import shutil
import sys
from pathlib import Path

import pytest

from mtpeft import layout
from mtpeft.errors import ConfigError
from mtpeft.manifest import MANIFEST_FILE, manifest_problem, write_manifest
from mtpeft.study.runner import run_study
from mtpeft.study.storage import open_storage
from mtpeft.study.synthetic import synthetic_spec


def _checkpoint(run_dir: Path, step: int) -> Path:
    checkpoint = run_dir / layout.CHECKPOINTS_DIR / f"step-{step:07d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(bytes([step]) * 64)
    (checkpoint / layout.STATE_FILE).write_text(f'{{"step": {step}}}')
    write_manifest(checkpoint)
    return checkpoint


def _run_dir(root: Path) -> Path:
    run_dir = root / "runs" / "r-0123456789"
    (run_dir / layout.BEST_DIR).mkdir(parents=True)
    (run_dir / layout.BEST_DIR / "heads.json").write_text("{}")
    (run_dir / layout.RUN_FILE).write_text('{"run_id": "abc", "group_id": null}')
    (run_dir / layout.TRAIN_LOG).write_text('{"step": 1, "loss": {}}\n')
    return run_dir


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_checkpoints_round_trip_through_storage(tmp_path, scheme):
    url = f"file://{tmp_path / 'storage'}" if scheme == "file" else f"memory://{tmp_path.name}/storage"
    storage = open_storage(url)
    storage.check_reachable()
    run_dir = _run_dir(tmp_path / "node-a")
    for step in (2, 4, 6):  # the node keeps two checkpoints; storage keeps the same two
        _checkpoint(run_dir, step)
        if step > 4:
            shutil.rmtree(run_dir / layout.CHECKPOINTS_DIR / "step-0000002")
        storage.push_checkpoint(run_dir, run_dir.name, run_dir / layout.CHECKPOINTS_DIR / f"step-{step:07d}")

    pulled = tmp_path / "node-b" / run_dir.name
    assert storage.pull_run(run_dir.name, pulled)
    assert [c.name for c in layout.checkpoint_dirs(pulled)] == ["step-0000006", "step-0000004"]
    assert manifest_problem(layout.latest_checkpoint(pulled)) is None  # byte for byte, manifest last
    assert (pulled / layout.BEST_DIR / "heads.json").is_file() and (pulled / layout.RUN_FILE).is_file()

    (run_dir / layout.COST_FILE).write_text("{}")
    storage.push_results(run_dir, run_dir.name)  # the end: results in, checkpoints gone
    final = tmp_path / "node-c" / run_dir.name
    assert storage.pull_run(run_dir.name, final)
    assert (final / layout.COST_FILE).is_file() and not (final / layout.CHECKPOINTS_DIR).exists()
    assert not storage.pull_run("never-trained", tmp_path / "none")


def test_a_checkpoint_cut_short_is_not_taken_for_one(tmp_path):
    """A node that dies mid-upload leaves files without the manifest: resuming skips that checkpoint."""
    storage = open_storage(str(tmp_path / "storage"))
    run_dir = _run_dir(tmp_path / "node-a")
    checkpoint = _checkpoint(run_dir, 2)
    files = [p for p in checkpoint.rglob("*") if p.name != MANIFEST_FILE]
    storage.push_files(run_dir, run_dir.name, files)  # everything but the manifest, then death
    pulled = tmp_path / "node-b" / run_dir.name
    assert storage.pull_run(run_dir.name, pulled)
    assert layout.checkpoint_dirs(pulled) and layout.latest_checkpoint(pulled) is None


def test_a_relative_storage_path_is_the_drivers(tmp_path):
    storage = open_storage("shared/study", base=tmp_path)
    assert storage.run_location("r") == f"{tmp_path}/shared/study/runs/r"
    # Picklable (a Ray task carries it to its node, which opens the file system again there).
    assert pickle.loads(pickle.dumps(storage)).run_location("r") == storage.run_location("r")


def test_an_unknown_url_scheme_names_the_field():
    with pytest.raises(ConfigError, match=r"field 'storage'.*unknown URL scheme 'nosuch://'"):
        open_storage("nosuch://bucket/x")


def test_s3_without_s3fs_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError, installed or not
    registry = importlib.import_module("fsspec.registry")._registry  # the classes fsspec imported
    monkeypatch.delitem(registry, "s3", raising=False)
    with pytest.raises(ConfigError, match=r"field 'storage'.*pip install s3fs"):
        open_storage("s3://bucket/prefix")


def test_an_unwritable_storage_fails_before_anything_trains(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"field 'storage'.*not reachable from the driver"):
        open_storage(str(blocker / "storage")).check_reachable()


def test_the_local_executor_refuses_storage(tmp_path):
    spec = synthetic_spec(workspace=tmp_path, methods=["lora"], task_sets=["single"])
    for task in ("py-defect", "py-clone", "py-search"):
        (tmp_path / "data" / task).mkdir(parents=True)
    spec = spec.model_copy(update={"storage": "s3://bucket/x"})
    with pytest.raises(ConfigError, match=r"field 'storage'.*--executor ray"):
        run_study(spec, run_fn=lambda *a, **k: None, executor="local", progress=False)
