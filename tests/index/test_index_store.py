"""index/store.py's write_index: only a folder that is provably an mtpeft index is replaced, the sources
indexed are never inside what is replaced, and a build that dies before the swap leaves the old index.

Torch-free: vectors are made up; the CLI with a trained run is in tests/api/test_index.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mtpeft.index import SearchIndexError, load_index, store
from mtpeft.index.store import check_target, write_index

UNIT = {"path": "app.py", "name": "f", "kind": "function", "language": "python", "start_line": 1,
        "end_line": 2, "hash": "h"}  # fmt: skip


def _manifest(root: Path) -> dict:
    return {"run": {"run_id": "r1", "run_dir": "/runs/r1", "fingerprint": "f"}, "task": "code-search",
            "root": str(root)}  # fmt: skip


def _write(out: Path, root: Path, count: int = 1) -> Path:
    vectors = np.eye(count, 4, dtype=np.float32)
    return write_index(out, _manifest(root), vectors, [UNIT] * count, source=root)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The issue's reproduction: a web app folder with its own manifest.json and a source tree."""
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "manifest.json").write_text("{}\n")
    (p / "src" / "app.py").write_text("def f():\n    return 1\n")
    return p


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_a_folder_with_someone_elses_manifest_json_is_refused_not_deleted(project):
    before = _files(project)
    with pytest.raises(SearchIndexError, match="holds the source being indexed") as refused:
        _write(project, project / "src")
    assert str(project) in str(refused.value)
    assert _files(project) == before
    elsewhere = project.parent / "q"
    (elsewhere / "src").mkdir(parents=True)
    (elsewhere / "manifest.json").write_text("{}\n")  # the same folder, but not holding the source
    with pytest.raises(SearchIndexError, match=r"not an mtpeft index \(it holds src"):
        _write(elsewhere, project / "src")
    assert (elsewhere / "manifest.json").read_text() == "{}\n"


def test_a_lone_manifest_json_of_another_format_is_refused(tmp_path):
    out = tmp_path / "ext"
    out.mkdir()
    (out / "manifest.json").write_text('{"manifest_version": 3, "name": "my extension"}')
    with pytest.raises(SearchIndexError, match="format None, not 'mtpeft.index/1'"):
        _write(out, tmp_path / "src")
    (out / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SearchIndexError, match="is not an index manifest"):
        check_target(out)
    assert (out / "manifest.json").read_text() == "[1, 2]"


def test_an_index_holding_a_user_file_is_refused(tmp_path):
    out = _write(tmp_path / "idx", tmp_path / "src")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SearchIndexError, match="it holds notes.txt, which an index never does"):
        _write(out, tmp_path / "src", count=2)
    assert (out / "notes.txt").read_text() == "mine" and len(load_index(out)) == 1


def test_an_index_whose_file_is_a_folder_is_refused(tmp_path):
    out = _write(tmp_path / "idx", tmp_path / "src")
    (out / "units.jsonl").unlink()
    (out / "units.jsonl").mkdir()
    (out / "units.jsonl" / "keep.txt").write_text("mine")
    with pytest.raises(SearchIndexError, match="units.jsonl is not a plain file"):
        _write(out, tmp_path / "src")
    assert (out / "units.jsonl" / "keep.txt").read_text() == "mine"


def test_an_index_empty_folder_or_new_path_is_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(load_index(_write(empty, tmp_path / "src"))) == 1
    assert len(load_index(_write(tmp_path / "new" / "idx", tmp_path / "src"))) == 1
    again = _write(empty, tmp_path / "src", count=3)  # an index is replaced whole
    assert len(load_index(again)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # no scratch or old folder left


def test_an_index_inside_the_source_tree_is_fine_but_not_the_tree_or_a_folder_holding_it(tmp_path):
    src = tmp_path / "repo"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("def f():\n    return 1\n")
    assert len(load_index(_write(src / ".mtpeft-index", src))) == 1
    for out in (src, tmp_path, src / "pkg" / ".."):
        with pytest.raises(SearchIndexError, match="holds the source being indexed"):
            _write(out, src)
    with pytest.raises(SearchIndexError, match="not an mtpeft index"):
        _write(src / "pkg", src)  # a source folder inside the tree
    assert (src / "pkg" / "a.py").is_file()


def test_a_symlink_to_the_source_is_seen_through(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(SearchIndexError, match="holds the source being indexed"):
        _write(link, src)


def test_a_build_that_dies_before_the_swap_leaves_the_old_index(tmp_path, monkeypatch):
    out = _write(tmp_path / "idx", tmp_path / "src")
    before = _files(out)

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_file_sha256", crash)  # mid-build: after vectors.npy and units.jsonl
    with pytest.raises(KeyboardInterrupt):
        _write(out, tmp_path / "src", count=2)
    monkeypatch.undo()
    assert _files(out) == before and len(load_index(out)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # the scratch folder went too


def test_a_file_that_appears_in_the_index_during_the_build_is_kept(tmp_path, monkeypatch):
    out = _write(tmp_path / "idx", tmp_path / "src")
    real_write = store._write_files

    def user_saves_a_file_meanwhile(*args, **kwargs):
        real_write(*args, **kwargs)
        (out / "draft.txt").write_text("mine")

    monkeypatch.setattr(store, "_write_files", user_saves_a_file_meanwhile)
    with pytest.raises(SearchIndexError, match="it holds draft.txt"):
        _write(out, tmp_path / "src", count=2)
    assert (out / "draft.txt").read_text() == "mine" and len(load_index(out)) == 1


def test_a_file_as_out_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(SearchIndexError, match="is a file"):
        _write(tmp_path / "f", tmp_path / "src")
    assert (tmp_path / "f").read_text() == "mine"


def test_the_format_marker_is_what_makes_a_folder_ours(tmp_path):
    out = _write(tmp_path / "idx", tmp_path / "src")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest | {"format": "mtpeft.index/0"}))
    with pytest.raises(SearchIndexError, match="format 'mtpeft.index/0'"):
        check_target(out)


def test_a_file_name_that_is_not_utf8_is_indexed_and_loads_back_as_the_same_name(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    name = os.fsdecode(b"bad\xff\xfename.py")  # what os.walk gives for such a name
    unit = UNIT | {"path": name}
    write_index(tmp_path / "idx", _manifest(root), np.eye(1, 4, dtype=np.float32), [unit], source=root)
    index = load_index(tmp_path / "idx")
    assert index.units[0]["path"] == name
