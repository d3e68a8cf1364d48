"""Manifests: every file's size and sha256, written last, checked before a directory is trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtpeft.manifest import MANIFEST_FILE, has_manifest, manifest_problem, write_manifest


@pytest.fixture
def saved(tmp_path) -> Path:
    directory = tmp_path / "step-0000004"
    (directory / "adapter").mkdir(parents=True)
    (directory / "optimizer.bin").write_bytes(bytes(range(256)) * 40)
    (directory / "adapter" / "weights.safetensors").write_bytes(b"\x01" * 4096)
    (directory / "trainer_state.json").write_text('{"step": 4}')
    write_manifest(directory)
    return directory


def test_an_intact_directory_has_no_problem(saved):
    assert has_manifest(saved) and manifest_problem(saved) is None
    files = json.loads((saved / MANIFEST_FILE).read_text())["files"]
    assert set(files) == {"optimizer.bin", "adapter/weights.safetensors", "trainer_state.json"}
    assert files["adapter/weights.safetensors"]["size"] == 4096
    assert not (saved / (MANIFEST_FILE + ".tmp")).exists()


def test_each_kind_of_damage_is_named_with_its_file(saved):
    weights = saved / "adapter" / "weights.safetensors"
    weights.write_bytes(b"\x01" * 120)
    assert manifest_problem(saved) == "adapter/weights.safetensors: size 120 != 4096"
    weights.write_bytes(b"\x01" * 2048 + b"\x02" + b"\x01" * 2047)  # one byte changed, same size
    assert manifest_problem(saved) == "adapter/weights.safetensors: checksum mismatch"
    weights.unlink()
    assert manifest_problem(saved) == "adapter/weights.safetensors: missing"


def test_a_missing_or_garbled_manifest_is_a_problem_not_a_traceback(saved):
    (saved / MANIFEST_FILE).write_text('{"files": [1, 2')
    assert manifest_problem(saved).startswith(f"{MANIFEST_FILE}: unreadable")
    (saved / MANIFEST_FILE).write_text('{"files": {"optimizer.bin": 3}}')
    assert manifest_problem(saved).startswith(f"{MANIFEST_FILE}: unreadable")
    (saved / MANIFEST_FILE).write_bytes(b"\xff\xfe")
    assert manifest_problem(saved).startswith(f"{MANIFEST_FILE}: unreadable")
    (saved / MANIFEST_FILE).write_text("[" * 100_000)  # deeper than the JSON parser's recursion limit
    assert manifest_problem(saved).startswith(f"{MANIFEST_FILE}: unreadable")
    (saved / MANIFEST_FILE).unlink()
    assert manifest_problem(saved).startswith(f"{MANIFEST_FILE}: missing") and not has_manifest(saved)


def test_a_file_added_after_the_manifest_is_not_damage(saved):
    (saved / "notes.txt").write_text("added by hand")
    assert manifest_problem(saved) is None
