"""Several paths at once, as pre-commit passes the changed files: what is scanned and how paths read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from scan_fakes import write_tree

from mtpeft.scan.extract import ExtractOptions, extract_tree

GOOD = "def ok():\n    return 1\n"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_tree(
        tmp_path / "repo",
        {
            "src/a.py": GOOD,
            "src/b.py": "def b():\n    return 2\n",
            "src/gen/c.py": "def c():\n    return 3\n",
            "lib/D.java": "class D { void m() {} }",
            "README.md": "# not code\n",
        },
    )
    monkeypatch.chdir(root)  # pre-commit runs hooks from the repository's top folder
    return root


def test_files_named_from_the_top_folder_keep_the_paths_as_given(repo: Path) -> None:
    result = extract_tree(["src/a.py", "lib/D.java"])
    assert [u.path for u in result.units] == ["src/a.py", "lib/D.java"]
    assert result.root == repo.resolve() and result.files == 2 and not result.skipped


def test_a_named_file_is_scanned_even_when_an_exclude_matches_it(repo: Path) -> None:
    options = ExtractOptions(exclude=["gen/"])
    named = extract_tree(["src/gen/c.py", "src/a.py"], options)
    assert [u.path for u in named.units] == ["src/gen/c.py", "src/a.py"]
    walked = extract_tree(["src", "lib"], options)  # folders are walked with the excludes
    assert [u.path for u in walked.units] == ["src/a.py", "src/b.py", "lib/D.java"]


def test_a_named_file_the_scan_cannot_read_is_listed_with_the_reason(repo: Path) -> None:
    result = extract_tree(["README.md", "src/a.py", "lib/D.java"], ExtractOptions(languages=["python"]))
    assert [u.path for u in result.units] == ["src/a.py"]
    assert {(s.path, s.reason) for s in result.skipped} == {
        ("README.md", "not a language the scan reads (c, cpp, java, python)"),
        ("lib/D.java", "java is not among the languages asked for"),
    }


def test_a_file_named_twice_or_inside_a_named_folder_is_scanned_once(repo: Path) -> None:
    result = extract_tree(["src/a.py", "src", "./src/a.py"])
    assert [u.path for u in result.units] == ["src/a.py", "src/b.py", "src/gen/c.py"]


def test_paths_outside_the_current_folder_are_relative_to_their_common_folder(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = extract_tree([repo / "src" / "a.py", repo / "lib"])
    assert [u.path for u in result.units] == ["src/a.py", "lib/D.java"]
    assert result.root == repo.resolve()


def test_a_named_fifo_is_skipped_not_read(repo: Path) -> None:
    os.mkfifo(repo / "pipe.py")  # reading it would block forever
    result = extract_tree(["pipe.py", "src/a.py"])
    assert [(s.path, s.reason) for s in result.skipped] == [("pipe.py", "not a regular file")]
    assert [u.path for u in result.units] == ["src/a.py"]


def test_no_path_or_a_missing_one_is_an_error(repo: Path) -> None:
    with pytest.raises(ValueError, match="no path to scan"):
        extract_tree([])
    with pytest.raises(FileNotFoundError, match="gone.py"):
        extract_tree(["src/a.py", "gone.py"])
