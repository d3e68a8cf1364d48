"""Nothing in a tree is fatal: bad files are listed with a reason and the scan goes on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scan_fakes import write_tree

from mtpeft.scan import extract as extract_module
from mtpeft.scan.extract import ExtractOptions, SkipFile, extract_source, extract_tree
from mtpeft.scan.languages import LANGUAGES

GOOD = "def ok():\n    return 1\n"


@pytest.fixture
def messy_tree(tmp_path: Path) -> Path:
    root = write_tree(
        tmp_path / "repo",
        {
            "good.py": GOOD,
            "[red].py": "def styled():\n    return '[bold]not markup[/bold]'\n",
            "empty.py": "",
            "binary.c": b"\x7fELF\x00\x00\x01int main() {}",
            "latin1.py": "def caf\xe9():\n    pass\n".encode("latin-1"),
            "broken.py": "def (:\n  ))) ]] class\n  = = =\n" * 5,
            "bom.py": b"\xef\xbb\xbfdef with_bom():\n    pass\n",
            "big.java": "class Big { void m() {} }\n" + "// padding\n" * 200,
            "node_modules/lib/index.py": GOOD,
            ".git/hooks/pre-commit.py": GOOD,
            "pkg/__pycache__/x.py": GOOD,
            "notes.txt": "not source code",
            "pkg/mod.py": GOOD,
        },
    )
    (root / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop back to the root
    (root / "outside.py").symlink_to(tmp_path / "elsewhere.py")  # leaves the tree (and dangles)
    (tmp_path / "elsewhere.py").write_text(GOOD)
    (root / "self.py").symlink_to(root / "self.py")  # a link to itself
    os.mkfifo(root / "pipe.py")  # opening it would block forever
    return root


def test_messy_tree_is_scanned_and_every_problem_is_listed(messy_tree: Path) -> None:
    result = extract_tree(messy_tree, ExtractOptions(max_file_bytes=1000))
    names = {(u.path, u.name) for u in result.units}
    assert names == {("good.py", "ok"), ("[red].py", "styled"), ("bom.py", "with_bom"), ("pkg/mod.py", "ok")}
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons["binary.c"] == "binary file (NUL bytes)"
    assert reasons["latin1.py"] == "not UTF-8: byte 0xe9 on line 1"
    assert reasons["broken.py"].startswith("parse errors in ")
    assert reasons["big.java"].startswith("too big: ")
    assert reasons["loop"] == "symbolic link, not followed"
    assert reasons["outside.py"] == "symbolic link, not followed"
    assert reasons["self.py"] == "symbolic link, not followed"
    assert reasons["pipe.py"] == "not a regular file"
    assert "empty.py" not in reasons and "notes.txt" not in reasons  # empty is fine; .txt is not source
    assert not any("node_modules" in p or ".git" in p or "__pycache__" in p for p, _ in names)
    assert result.files == 5  # good, [red], empty, bom and pkg/mod were read and parsed


def test_bom_does_not_shift_positions(messy_tree: Path) -> None:
    unit = next(u for u in extract_tree(messy_tree).units if u.name == "with_bom")
    assert (unit.start_line, unit.start_column) == (1, 1)
    assert unit.code.startswith("def with_bom")


def test_unreadable_file_and_directory_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root here, so permissions cannot make a file unreadable: fail the read instead.
    root = write_tree(tmp_path, {"a.py": GOOD, "b.py": GOOD, "sub/c.py": GOOD})
    real_read = Path.read_bytes

    def failing_read(self: Path) -> bytes:
        if self.name == "b.py":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    real_scandir = os.scandir

    def failing_scandir(path: os.PathLike[str] | str):  # type: ignore[no-untyped-def]
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    monkeypatch.setattr(extract_module.os, "scandir", failing_scandir)
    result = extract_tree(root)
    assert [u.path for u in result.units] == ["a.py"]
    assert {(s.path, s.reason) for s in result.skipped} == {
        ("b.py", "cannot read: Permission denied"),
        ("sub", "cannot read directory: Permission denied"),
    }


def test_excludes_and_language_filter(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "src/a.py": GOOD,
            "src/gen/b.py": GOOD,
            "lib/C.java": "class C { void m() {} }",
            "vendor/d.c": "int d(void){return 0;}",
        },
    )
    result = extract_tree(root, ExtractOptions(exclude=["gen/", "/vendor"]))
    assert sorted(u.path for u in result.units) == ["lib/C.java", "src/a.py"]
    only_java = extract_tree(root, ExtractOptions(languages=["java"]))
    assert [u.path for u in only_java.units] == ["lib/C.java"]
    with pytest.raises(ValueError, match="unknown language"):
        extract_tree(root, ExtractOptions(languages=["cobol"]))


def test_a_single_file_can_be_scanned(tmp_path: Path) -> None:
    path = write_tree(tmp_path, {"one.py": GOOD}) / "one.py"
    result = extract_tree(path)
    assert [(u.path, u.name) for u in result.units] == [("one.py", "ok")]
    assert result.root == tmp_path.resolve()


def test_file_with_a_few_errors_is_kept(tmp_path: Path) -> None:
    # One bad line in an otherwise fine file: under the error threshold, the good functions stay.
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30))
    root = write_tree(tmp_path, {"m.py": body + "def bad(:\n    pass\n"})
    result = extract_tree(root)
    assert not result.skipped
    assert {f"f{i}" for i in range(30)} <= {u.name for u in result.units}


def test_a_missing_root_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        extract_tree(tmp_path / "nowhere")


FRAGMENTS = st.sampled_from(
    ["def ", "class ", "(", ")", ":", "\n", "    ", "{", "}", ";", "@Test ", "void ", "int ", "TEST(", ",",
     "é", "\t", "\x00", "\xff", "#ifdef X\n", "/*", "*/", '"', "lambda", "namespace ", "::",
     "template <class T>"]
)  # fmt: skip


@pytest.mark.fuzz
@given(parts=st.lists(FRAGMENTS, max_size=60), language=st.sampled_from(sorted(LANGUAGES)))
def test_any_input_gives_units_or_a_reason(parts: list[str], language: str) -> None:
    data = "".join(parts).encode("utf-8", "surrogateescape")
    try:
        units = extract_source("f", data, LANGUAGES[language])
    except SkipFile as reason:
        assert str(reason)
        return
    for unit in units:
        assert 1 <= unit.start_line <= unit.end_line and unit.start_column >= 1 and unit.code
