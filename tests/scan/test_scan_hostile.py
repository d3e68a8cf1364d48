"""Hostile trees (issue 24, items 3, 8 and 15): a file name that is not UTF-8, syntax trees thousands of
levels deep, terminal controls and rich markup in names. `mtpeft scan` reports them all and exits 0.

The CLI runs in this process through its real entry point, with `mtpeft.api` replaced by a module whose
`load` returns the deterministic FakeAnalyzer: these tests stay torch-free and fast. The same tree through
a real trained run is in tests/api/test_scan_cli.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import jsonschema
import pytest
from scan_fakes import FakeAnalyzer

from mtpeft.scan import extract as extract_module
from mtpeft.scan import scan_tree
from mtpeft.scan.extract import ExtractOptions, extract_source, extract_tree
from mtpeft.scan.languages import LANGUAGES

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
VULNERABLE = "def f():\n    return eval(x)\n"  # a finding with the fake analyzer (P = 0.95)
BAD_NAME = b"bad\xff\xfename.py"  # the issue's reproduction: not UTF-8
CONTROLS = ("\x1b", "\x07", "\r", "\x9b")  # ESC, BEL, CR, C1 CSI: none may reach a terminal raw


# ------------------------------------------------------------------------------------------ trees


def c_ifs(depth: int) -> str:
    return "#if 1\n" * depth + "int inner(void) { return 0; }\n" + "#endif\n" * depth


def java_classes(depth: int) -> str:
    return "".join(f"class C{i} {{ " for i in range(depth)) + "void inner() {}" + "}" * depth


def cpp_namespaces(depth: int) -> str:
    return "".join(f"namespace n{i} {{ " for i in range(depth)) + "int inner() { return 0; }" + "}" * depth


def python_classes(depth: int) -> str:
    # One space per level keeps 1,500 levels at 1.1 MB (under the 2 MB file limit).
    body = "".join(" " * i + f"class C{i}:\n" for i in range(depth))
    return body + " " * depth + "def inner(self):\n" + " " * (depth + 1) + "pass\n"


def cpp_mixed(depth: int) -> str:
    """C++ containers of every kind the walker enters, `depth` levels: namespaces, `#ifdef`s and
    `extern "C++"` blocks alternating, then structs and classes (which may not hold namespaces)."""
    half = depth // 2
    outer = ("namespace n{i} {{\n", "#ifdef X{i}\n", 'extern "C++" {{\n')
    outer_end = ("}\n", "#endif\n", "}\n")
    inner = ("struct S{i} {{\n", "class K{i} {{\n")
    head = "".join(outer[i % 3].format(i=i) for i in range(half))
    head += "".join(inner[i % 2].format(i=i) for i in range(half, depth))
    tail = "};\n" * (depth - half) + "".join(outer_end[i % 3] for i in reversed(range(half)))
    return head + "int inner() { return 0; }\n" + tail


REPRODUCTIONS = {  # issue 24, item 8, as written
    "deep_if.c": c_ifs(1000),
    "DeepClasses.java": java_classes(500),
    "deep_ns.cpp": cpp_namespaces(1000),
    "deep_classes.py": python_classes(600),
}
HOSTILE_NAMES: dict[bytes, str] = {
    BAD_NAME: VULNERABLE,  # item 3
    "dir-\xe9\xe0".encode("latin-1") + b"/ok.py": VULNERABLE,  # a folder name that is not UTF-8
    b"\x1b[2Jclear.py": VULNERABLE,  # item 15: clears the screen
    b"\x1b]0;title\x07.py": VULNERABLE,  # sets the terminal's title
    b"cr\rline.py": VULNERABLE,  # overwrites the line
    "c1-\x9b2J.py".encode(): VULNERABLE,  # U+009B: CSI on terminals that read C1 controls
    b"[bold]markup[red].py": VULNERABLE,  # rich markup
    b"names.cpp": b'TEST_CASE("\x1b[2J wipes [red]x[/red]") {\n  REQUIRE(eval(1));\n}\n',
}


def write_bytes_tree(root: Path, files: dict[bytes, str | bytes]) -> Path:
    """Like scan_fakes.write_tree, with names as raw bytes (file names are bytes on POSIX)."""
    for rel, content in files.items():
        path = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(content if isinstance(content, bytes) else content.encode())
    return root


@pytest.fixture
def hostile_tree(tmp_path: Path) -> Path:
    """Every hostile file of items 3, 8 and 15 in one tree, beside an ordinary file."""
    deep = {name.encode(): text for name, text in REPRODUCTIONS.items()}
    return write_bytes_tree(tmp_path / "tree", {**HOSTILE_NAMES, **deep, b"plain.py": VULNERABLE})


# ------------------------------------------------------------------------------------------- CLI


@dataclass
class Done:
    code: int
    out: str
    err: str


class FakeRun(FakeAnalyzer):
    """What `mtpeft.api.load` returns, as far as `mtpeft scan` uses it."""

    @contextlib.contextmanager
    def reusing_encodings(self) -> Iterator[None]:
        yield


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace `mtpeft.api` (torch) with a module whose `load` gives a FakeRun; records the runs loaded."""
    loaded: list[str] = []

    def load(run_dir: object, **_: object) -> FakeRun:
        loaded.append(str(run_dir))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "mtpeft.api", types.SimpleNamespace(load=load))
    return loaded


@pytest.fixture
def scan(
    loads: list[str], monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> Callable[..., Done]:
    """`mtpeft scan ARGS... --run RUN --no-progress` through the real entry point (exit code included).

    stdout and stderr are captured as bytes through strict UTF-8 text streams, like a pipe's: a raw
    surrogate fails as it would in a terminal, and the bytes show exactly what a terminal would get.
    """
    from mtpeft.cli.main import main

    def invoke(*args: str | Path) -> Done:
        monkeypatch.setattr(sys, "argv", ["mtpeft", "scan", *map(str, args), "--run", "RUN", "--no-progress"])
        capsysbinary.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsysbinary.readouterr()
        assert b"Traceback" not in err, err.decode("utf-8", "replace")
        return Done(int(exited.value.code or 0), out.decode("utf-8"), err.decode("utf-8"))

    return invoke


def validate(log: dict[str, object]) -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(log)


def uris(log: dict) -> set[str]:
    found = {
        loc["physicalLocation"]["artifactLocation"]["uri"]
        for result in log["runs"][0]["results"]
        for loc in result["locations"]
    }
    notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    return found | {n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in notes}


# ------------------------------------------------------------------------------------- done-when


def test_every_hostile_file_at_once_gives_a_schema_valid_sarif_and_exit_0(
    hostile_tree: Path, tmp_path: Path, scan: Callable[..., Done]
) -> None:
    report = tmp_path / "r.sarif"
    # Threshold 0: every unit is a result, so every file must be located in the log.
    done = scan(hostile_tree, "--format", "sarif", "--out", report, "--threshold", "0,0,0")
    assert done.code == 0, done.err
    log = json.loads(report.read_bytes().decode("utf-8"))  # strict UTF-8: no surrogate got through
    validate(log)
    # Every file is in the report, located by a URI that names its exact bytes.
    located = {unquote_to_bytes(uri) for uri in uris(log)}
    assert set(HOSTILE_NAMES) | {name.encode() for name in REPRODUCTIONS} <= located
    for raw in located:
        assert os.path.isfile(os.path.join(os.fsencode(hostile_tree), raw))
    # The deep files were read, not skipped: their innermost unit is there.
    names = {
        r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for r in log["runs"][0]["results"]
    }
    assert "0 files skipped" in done.err
    assert "inner" in names  # deep_if.c's function sits at file scope, 1,000 #ifs down
    assert "wipes" in " ".join(names)  # the Catch2 test named with a control sequence
    assert not any(c in done.err for c in CONTROLS)


# ------------------------------------------------------------------------------ item 3: file names


def test_a_file_name_that_is_not_utf8_is_percent_encoded_in_sarif(
    tmp_path: Path, scan: Callable[..., Done]
) -> None:
    tree = write_bytes_tree(tmp_path / "t", {BAD_NAME: VULNERABLE})
    report = tmp_path / "r.sarif"
    done = scan(tree, "--out", report, "--format", "sarif")
    assert done.code == 0, done.err
    log = json.loads(report.read_text(encoding="utf-8"))
    validate(log)
    (result,) = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "bad%FF%FEname.py"
    assert "sarif report written to" in done.err


def test_a_scanned_folder_whose_own_name_is_not_utf8_gives_a_valid_root_uri(
    tmp_path: Path, scan: Callable[..., Done]
) -> None:
    tree = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9pertoire")))
    write_bytes_tree(tree, {b"sub\xff/ok.py": VULNERABLE})
    report = tmp_path / "r.sarif"
    assert scan(tree, "--out", report, "--format", "sarif").code == 0
    log = json.loads(report.read_text(encoding="utf-8"))
    validate(log)
    assert log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"].endswith("/r%E9pertoire/")
    assert uris(log) == {"sub%FF/ok.py"}


def test_json_html_and_table_show_the_bad_name_escaped(tmp_path: Path, scan: Callable[..., Done]) -> None:
    tree = write_bytes_tree(tmp_path / "t", {BAD_NAME: VULNERABLE, b"d\xe9j\xe0/x.py": VULNERABLE})
    as_json = json.loads(scan(tree, "--format", "json").out)
    assert sorted(u["path"] for u in as_json["units"]) == ["bad\\xff\\xfename.py", "d\\xe9j\\xe0/x.py"]
    report = tmp_path / "r.html"
    assert scan(tree, "--format", "html", "--out", report).code == 0
    page = report.read_bytes().decode("utf-8")
    assert "<h3>bad\\xff\\xfename.py</h3>" in page and "d\\xe9j\\xe0/x.py" in page
    table = scan(tree)
    assert table.code == 0 and "bad\\xff\\xfename.py:1" in table.out


def test_a_failed_write_leaves_the_previous_report_whole(
    tmp_path: Path, scan: Callable[..., Done], monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = write_bytes_tree(tmp_path / "t", {b"ok.py": VULNERABLE})
    report = tmp_path / "r.json"
    report.write_text('{"previous": "report"}\n')

    def full_disk(result: object, out: object, options: object) -> None:
        out.write('{"half": ')  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    from mtpeft.scan import report as report_module

    monkeypatch.setitem(report_module.FORMATS, "json", full_disk)
    done = scan(tree, "--format", "json", "--out", report)
    assert done.code == 2 and "no space left on the device to write it" in done.err
    assert "the file was left as it was" in done.err
    assert report.read_text() == '{"previous": "report"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t"]  # no temporary file left


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("existing-folder", "is a folder; give a file name"),
        ("missing/r.sarif", "the folder {tmp}/missing does not exist; create it first"),
        ("t/ok.py", "is a source file of the tree being scanned"),
    ],
)
def test_an_unusable_out_is_refused_before_the_run_loads(
    tmp_path: Path, scan: Callable[..., Done], loads: list[str], out: str, message: str
) -> None:
    tree = write_bytes_tree(tmp_path / "t", {b"ok.py": VULNERABLE})
    (tmp_path / "existing-folder").mkdir()
    done = scan(tree, "--out", tmp_path / out)
    assert done.code == 2 and message.format(tmp=tmp_path) in done.err
    assert loads == []  # refused before the model was loaded
    assert (tree / "ok.py").read_text() == VULNERABLE


def test_scanning_one_file_refuses_it_as_out(tmp_path: Path, scan: Callable[..., Done]) -> None:
    source = write_bytes_tree(tmp_path, {b"one.py": VULNERABLE}) / "one.py"
    done = scan(source, "--out", tmp_path / "." / "one.py", "--format", "json")
    assert done.code == 2 and "is the input" in done.err
    assert source.read_text() == VULNERABLE


# ------------------------------------------------------------------------- item 8: deep syntax trees


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_the_issues_deep_files_are_extracted(name: str) -> None:
    spec = {"c": "c", "java": "java", "cpp": "cpp", "py": "python"}[name.rsplit(".", 1)[1]]
    (unit,) = extract_source(name, REPRODUCTIONS[name].encode(), LANGUAGES[spec])
    assert unit.name.rsplit(LANGUAGES[spec].qualifier, 1)[-1] == "inner"


DEEPER = {  # variants: five times the issue's depth, and every C++ container mixed
    "c": c_ifs(5000),
    "java": java_classes(5000),
    "cpp": cpp_namespaces(5000),
    "python": python_classes(1500),
}


@pytest.mark.parametrize("language", sorted(DEEPER))
def test_thousands_of_levels_are_walked_without_recursion(language: str) -> None:
    data = DEEPER[language].encode()
    (unit,) = extract_source("deep", data, LANGUAGES[language], ExtractOptions(max_file_bytes=len(data)))
    qualifier = LANGUAGES[language].qualifier
    assert unit.name.rsplit(qualifier, 1)[-1] == "inner"
    if language in ("java", "cpp"):  # every level is in the qualified name, outermost first
        assert unit.name.split(qualifier)[:2] == (["C0", "C1"] if language == "java" else ["n0", "n1"])
        assert len(unit.name.split(qualifier)) == 5001


def test_mixed_cpp_nesting_keeps_every_scope_in_order() -> None:
    (unit,) = extract_source("mixed.cpp", cpp_mixed(3000).encode(), LANGUAGES["cpp"])
    parts = unit.name.split("::")
    assert parts[:3] == ["n0", "n3", "n6"]  # #ifdef and extern blocks add no name
    assert parts[500:503] == ["S1500", "K1501", "S1502"]  # then the 1,500 classes, in order
    assert len(parts) == 500 + 1500 + 1 and parts[-1] == "inner" and unit.kind == "method"


def test_any_failure_on_one_file_skips_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = write_bytes_tree(tmp_path, {f"{n}.py".encode(): VULNERABLE for n in ("deep", "huge", "odd", "ok")})
    real = extract_module.extract_file
    failures = {
        "deep.py": RecursionError("maximum recursion depth exceeded"),
        "huge.py": MemoryError(),
        "odd.py": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    }

    def failing(rel: str, *args: object, **kwargs: object) -> object:
        if rel in failures:
            raise failures[rel]
        return real(rel, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(extract_module, "extract_file", failing)
    result = scan_tree(tree, FakeAnalyzer(), progress=False)
    assert [u.path for u in result.units] == ["ok.py"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons == {
        "deep.py": "not extracted: nested too deeply",
        "huge.py": "not extracted: out of memory on this file",
        "odd.py": "not extracted: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte (please report this file)",
    }


# ------------------------------------------------------------------- item 15: terminal and markup


def test_table_output_sends_no_control_character_and_no_markup(
    tmp_path: Path, scan: Callable[..., Done]
) -> None:
    tree = write_bytes_tree(tmp_path / "t", dict(HOSTILE_NAMES))
    done = scan(tree, "--threshold", "0,0,0")
    assert done.code == 0
    assert not any(c in done.out + done.err for c in CONTROLS)
    for shown in (
        "\\x1b[2Jclear.py:1",
        "\\x1b]0;title\\x07.py:1",
        "cr\\x0dline.py:1",
        "c1-\\x9b2J.py:1",
        "[bold]markup[red].py:1",  # literally, brackets and all
        "bad\\xff\\xfename.py:1",
    ):
        assert shown in done.out.replace("\n", ""), shown
    assert "\\x1b[2J wipes [red]x[/red]" in done.out  # a unit NAME with a control sequence and markup


def test_json_and_html_carry_no_raw_control_character(tmp_path: Path, scan: Callable[..., Done]) -> None:
    tree = write_bytes_tree(tmp_path / "t", dict(HOSTILE_NAMES))
    done = scan(tree, "--format", "json")
    assert not any(c in done.out for c in CONTROLS)  # json on a terminal is as safe as the table
    paths = {u["path"] for u in json.loads(done.out)["units"]}
    assert {"\x1b[2Jclear.py", "c1-\x9b2J.py", "cr\rline.py"} <= paths  # escaped in JSON, exact once decoded
    report = tmp_path / "r.html"
    assert scan(tree, "--format", "html", "--out", report).code == 0
    page = report.read_text(encoding="utf-8")
    assert not any(c in page for c in CONTROLS)
    assert "\\x1b[2Jclear.py" in page and "[bold]markup[red].py" in page


def test_extract_tree_lists_hostile_names_without_failing(hostile_tree: Path) -> None:
    result = extract_tree(hostile_tree)
    assert result.skipped == [] and result.files == len(HOSTILE_NAMES) + len(REPRODUCTIONS) + 1


def test_search_prints_hostile_paths_and_names_escaped(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from mtpeft.cli.index_cmd import _print_hits
    from mtpeft.index.store import Hit

    hits = [
        Hit(1, 0.9, "\x1b[2Jclear.py", "f", "function", "python", 1, 2, 0),
        Hit(2, 0.8, "\x1b]0;title\x07.py", "[bold]g[/bold]", "function", "python", 3, 4, 1),
        Hit(3, 0.7, os.fsdecode(BAD_NAME), 'TEST_CASE "\x1b[2J\x9b"', "test", "cpp", 5, 6, 2),
    ]
    _print_hits(hits, types.SimpleNamespace(root=Path(os.fsdecode(b"/src/r\xe9po\r"))))  # type: ignore[arg-type]
    out, err = (stream.decode("utf-8") for stream in capsysbinary.readouterr())  # strict: no surrogate
    assert not any(c in out + err for c in CONTROLS)
    lines = out.splitlines()
    assert lines[1].split() == ["1", "0.900", "\\x1b[2Jclear.py:1", "f", "(function)"]
    assert lines[2].split()[2:] == ["\\x1b]0;title\\x07.py:3", "[bold]g[/bold]", "(function)"]
    assert lines[3].split()[2] == "bad\\xff\\xfename.py:5" and "\\x1b[2J\\x9b" in lines[3]
    assert "(paths relative to /src/r\\xe9po\\x0d)" in err
