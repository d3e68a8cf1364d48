"""`mtpeft index` / `mtpeft search` and `run.search`: the on-disk index, exact ranking, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtpeft.index import SearchIndexError, load_index

# Methods written like the code-search fixture the tiny run was trained on: its queries are their
# docstrings ("merge the pending files ."), so even a tiny model ranks them.
TOPICS = [
    ("count", "active", "users"),
    ("sort", "cached", "orders"),
    ("merge", "pending", "files"),
    ("filter", "remote", "tokens"),
    ("reverse", "sorted", "rows"),
    ("parse", "unique", "events"),
    ("encode", "valid", "pages"),
    ("load", "empty", "items"),
]


def _method(verb: str, adjective: str, noun: str) -> str:
    name = f"{verb}{adjective.title()}{noun.title()}"
    body = f"{{ return helper . {verb} ( {noun} , {adjective} ) ; }}"
    return f"  public int {name} ( List < Item > {noun} ) {body}\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search-tree")
    (root / "Catalog.java").write_text("class Catalog {\n" + "".join(_method(*t) for t in TOPICS) + "}\n")
    (root / "tools.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef scale(xs, k):\n    return [x * k for x in xs]\n"
    )
    (root / "lib.c").write_text("int twice(int x) {\n    return 2 * x;\n}\n")
    return root


@pytest.fixture(scope="module")
def index_dir(run_dir: Path, tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mtpeft.cli.main import app

    out = tmp_path_factory.mktemp("indexes") / "idx"
    app(
        ["index", str(tree), "--run", str(run_dir), "--out", str(out), "--no-progress"], standalone_mode=False
    )
    return out


def test_the_index_round_trips_what_run_embed_gives(run, index_dir, tree):
    from mtpeft.scan import extract_tree

    index = load_index(index_dir)
    units = extract_tree(tree).units
    assert [(u["path"], u["name"], u["start_line"]) for u in index.units] == [
        (u.path, u.name, u.start_line) for u in units
    ]
    assert {u["language"] for u in index.units} == {"java", "python", "c"}
    np.testing.assert_allclose(
        index.vectors, run.embed([u.code for u in units], task="code-search"), atol=1e-5
    )
    manifest = index.manifest
    assert manifest["task"] == "code-search" and manifest["root"] == str(tree.resolve())
    assert manifest["run"]["run_id"] == run.run_id and manifest["run"]["fingerprint"] == run.fingerprint


def test_ranking_is_brute_force_cosine_of_run_embed(run, index_dir, tree):
    from mtpeft.scan import extract_tree

    codes = [u.code for u in extract_tree(tree).units]
    query = "sort the cached orders ."
    scores = run.embed(codes) @ run.embed(query, query=True)
    expected = sorted(range(len(codes)), key=lambda i: (-scores[i], i))[:5]
    hits = run.search(query, k=5, index=index_dir)
    assert [h.row for h in hits] == expected and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([h.score for h in hits], scores[expected], atol=1e-5)
    assert len(run.search(query, k=100, index=index_dir)) == len(codes)  # k beyond the index: all of it


def test_a_docstring_like_query_finds_its_method(run, index_dir):
    """The tiny run learnt code search on the fixture (test MRR about 0.9): its own methods rank first."""
    queries = [f"{verb} the {adjective} {noun} ." for verb, adjective, noun in TOPICS]
    results = run.search(queries, k=3, index=index_dir)
    top1 = 0
    for (verb, adjective, noun), hits in zip(TOPICS, results, strict=True):
        wanted = f"Catalog.{verb}{adjective.title()}{noun.title()}"
        assert wanted in [h.name for h in hits], (wanted, hits)
        top1 += hits[0].name == wanted
    assert top1 >= len(TOPICS) - 1


def test_search_command_prints_file_line_name_and_score(run, run_dir, index_dir, mtpeft_cli):
    done = mtpeft_cli("search", "merge the pending files .", "--index", index_dir, "-k", "3")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0].split() == ["rank", "score", "location", "name"] and len(lines) == 4
    best = run.search("merge the pending files .", k=1, index=index_dir)[0]
    assert lines[1].split()[2:] == [f"Catalog.java:{best.start_line}", best.name, f"({best.kind})"]
    as_json = json.loads(
        mtpeft_cli("search", "merge", "--index", index_dir, "--format", "json", "-k", "2").out
    )
    assert [h["rank"] for h in as_json["hits"]] == [1, 2] and as_json["hits"][0]["path"] == "Catalog.java"


def test_an_index_built_by_another_run_is_refused(run_dir, index_dir, tmp_path, mtpeft_cli):
    other = tmp_path / "other-run"
    shutil.copytree(run_dir, other)
    (other / "run.json").write_text(json.dumps({"run_id": "0" * 32, "group_id": None}))
    done = mtpeft_cli("search", "merge", "--index", index_dir, "--run", other)
    assert done.code == 2
    assert "this index was built with run" in done.err and f"not with run {'0' * 32}" in done.err
    assert f"search it with --run {run_dir.resolve()}" in done.err

    # Same run id, other weights (retrained or resumed since): refused by the best/ fingerprint.
    shutil.copy(run_dir / "run.json", other / "run.json")
    heads = other / "best" / "heads.json"
    heads.write_text(heads.read_text() + "\n")
    changed = mtpeft_cli("search", "merge", "--index", index_dir, "--run", other)
    assert changed.code == 2 and "built from other model files" in changed.err


def _damage_manifest(directory: Path) -> None:
    (directory / "manifest.json").write_text('{"format": "mtpeft.index/1", "task": ')


def _truncate_vectors(directory: Path) -> None:
    path = directory / "vectors.npy"
    path.write_bytes(path.read_bytes()[:-100])


def _forge_a_count(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps(manifest | {"count": manifest["count"] + 1}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").unlink(), "is not a complete mtpeft index (no manifest.json"),
        (_damage_manifest, "manifest.json, line 1: damaged, not valid JSON"),
        (lambda d: (d / "units.jsonl").unlink(), "units.jsonl: is missing: the index is incomplete"),
        (_truncate_vectors, "vectors.npy: does not match its sha256 in manifest.json"),
        (_forge_a_count, "manifest.json says float32 ("),
    ],
)
def test_a_damaged_or_partial_index_is_a_clear_error(index_dir, tmp_path, mtpeft_cli, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    damage(copy)
    with pytest.raises(SearchIndexError, match=message.replace("(", r"\(")):
        load_index(copy)
    done = mtpeft_cli("search", "merge", "--index", copy)
    assert done.code == 2 and message in done.err and "rebuild it with `mtpeft index" in done.err


def test_index_never_overwrites_a_folder_that_is_not_an_index(run_dir, tree, tmp_path, mtpeft_cli):
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    done = mtpeft_cli("index", tree, "--run", run_dir, "--out", keep, "--no-progress")
    assert done.code == 2 and "is not an mtpeft index" in done.err
    assert (keep / "notes.txt").read_text() == "mine"
    rebuilt = mtpeft_cli("index", tree, "--run", run_dir, "--out", tmp_path / "fresh", "--no-progress")
    assert rebuilt.code == 0 and "indexed 11 units from 3 files with task 'code-search'" in rebuilt.err
    again = mtpeft_cli("index", tree, "--run", run_dir, "--out", tmp_path / "fresh", "--no-progress")
    assert again.code == 0 and len(load_index(tmp_path / "fresh")) == 11  # an index is replaced whole


def test_search_prints_control_characters_in_paths_and_names_escaped(run_dir, tmp_path, mtpeft_cli):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "\x1b[2Jclear.py").write_text("def merge_pending_files(a):\n    return a\n")
    (tree / "[bold]x[red].cpp").write_text('TEST_CASE("\x1b]0;title\x07") {\n  REQUIRE(merge(1));\n}\n')
    index = tmp_path / "idx"
    assert mtpeft_cli("index", tree, "--run", run_dir, "--out", index, "--no-progress").code == 0
    done = mtpeft_cli("search", "merge the pending files .", "--index", index, "-k", "2")
    assert done.code == 0, done.err
    assert not any(c in done.out + done.err for c in "\x1b\x07")  # nothing reaches the terminal raw
    assert "\\x1b[2Jclear.py:1" in done.out and "[bold]x[red].cpp:1" in done.out
    assert "\\x1b]0;title\\x07 (test)" in done.out


def test_index_out_holding_the_source_and_a_foreign_manifest_json_is_refused(run_dir, tmp_path, mtpeft_cli):
    """The issue's reproduction: `mtpeft index p/src --out p` used to leave p with only the index files."""
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "manifest.json").write_text("{}\n")
    (p / "src" / "app.py").write_text("def f():\n    return 1\n")
    done = mtpeft_cli("index", p / "src", "--run", run_dir, "--out", p, "--no-progress")
    assert done.code == 2 and str(p) in done.err and "holds the source being indexed" in done.err
    assert "Traceback" not in done.err
    assert (p / "manifest.json").read_text() == "{}\n" and (p / "src" / "app.py").is_file()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]  # no scratch folder left beside it


def test_index_refuses_to_replace_an_index_that_holds_a_user_file(run_dir, tree, tmp_path, mtpeft_cli):
    out = tmp_path / "idx"
    assert mtpeft_cli("index", tree, "--run", run_dir, "--out", out, "--no-progress").code == 0
    (out / "todo.md").write_text("mine")
    done = mtpeft_cli("index", tree, "--run", run_dir, "--out", out, "--no-progress")
    assert done.code == 2 and "it holds todo.md, which an index never does" in done.err
    assert (out / "todo.md").read_text() == "mine" and len(load_index(out)) == 11
