"""Names become file names only through mtpeft.paths: whatever a run or task is called, its files stay in
the workspace. (Before, a task named `/tmp/evil` made `evaluate` write `/tmp/evil.predictions.txt`.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from mtpeft.config import TrainConfig
from mtpeft.errors import ConfigError
from mtpeft.layout import predictions_dir, run_dir_for
from mtpeft.paths import MAX_STEM, inside, safe_filename, task_file

WORKSPACE = Path("/srv/mtpeft-test-workspace")  # never created: paths are only resolved
HOSTILE = [
    "",
    ".",
    "..",
    "../../escape",
    "a/../../b",
    "/tmp/evil",
    "C:\\Windows\\evil",
    "\\\\server\\share",
    ".hidden",
    "trailing.",
    "con",
    "NUL.txt",
    "lpt1",
    "a\x00b",
    "line\nbreak\r",
    "\x1b[31mred",
    "[/bold]",
    "名前/タスク",
    "e\u0301",
    "\u202eevil",
    "x" * 300,
    "~/x",
    "$(rm -rf ~)",
]
names = st.one_of(
    st.text(),
    st.text(st.characters(codec=None, exclude_categories=[])),  # lone surrogates, as JSON can carry
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(["..", ".", "", "a", "/", "\\", "~"]), max_size=8).map("/".join),
)


def _check_stem(stem: str) -> None:
    assert stem and len(stem) <= MAX_STEM
    assert not stem.startswith((".", "-")) and not stem.endswith(".")
    assert stem.isascii() and stem.isprintable()
    assert "/" not in stem and "\\" not in stem and " " not in stem
    assert stem.split(".")[0].lower() not in {"con", "prn", "aux", "nul", "lpt1", "com1"}


@pytest.mark.fuzz
@given(names)
@example("../../escape")
@example("/tmp/evil")
def test_no_task_or_run_name_places_a_file_outside_the_workspace(name):
    _check_stem(safe_filename(name))
    run_dir = WORKSPACE / "runs" / "r"
    try:  # validation refuses some names (empty, lone surrogates): those never name a run
        config = TrainConfig(name=name, tasks=[{"task": "vulnerability"}], workspace=str(WORKSPACE))
    except ValidationError:
        assert not name or any(0xD800 <= ord(c) <= 0xDFFF for c in name)
    else:
        run_dir = run_dir_for(config)
        assert run_dir.resolve().parent == (WORKSPACE / "runs").resolve()
    out = predictions_dir(run_dir, name)  # a split name from the data folder, as hostile as any
    assert out.resolve().parent == (run_dir / "predictions").resolve()
    for suffix in ("predictions.jsonl", "answers.txt", "per_example.json"):
        assert task_file(out, name, suffix).resolve().parent == out.resolve()


@pytest.mark.fuzz
@given(names, names)
def test_two_different_names_never_share_a_file(a, b):
    assume(a != b)
    assert safe_filename(a) != safe_filename(b)


@pytest.mark.fuzz
@given(names)
def test_a_safe_name_is_its_own_file_name(name):
    stem = safe_filename(name)
    assert safe_filename(stem) == stem


@pytest.mark.fuzz
@given(st.from_regex(r"[A-Za-z0-9_+]([A-Za-z0-9_.+-]{0,98}[A-Za-z0-9_+-])?", fullmatch=True))
def test_readable_names_are_kept_as_they_are(name):
    assume(name.split(".")[0].lower() not in {"con", "prn", "aux", "nul"})
    assume(not (name[:3].lower() in {"com", "lpt"} and name[3:4].isdigit() and name[4:5] in ("", ".")))
    assert safe_filename(name) == name


def test_hostile_names_map_to_readable_stems():
    assert safe_filename("vuln-chrome") == "vuln-chrome"
    assert safe_filename("py-defect+py-clone") == "py-defect+py-clone"
    assert safe_filename("/tmp/evil").startswith("tmp-evil-")
    assert safe_filename("../../escape").startswith("escape-")
    assert safe_filename("").startswith("unnamed-") and safe_filename("..").startswith("unnamed-")
    assert safe_filename("con").startswith("_con-") and safe_filename("nul.txt").startswith("_nul.txt-")
    long_a, long_b = "x" * 300, "x" * 299 + "y"
    assert len(safe_filename(long_a)) <= MAX_STEM and safe_filename(long_a) != safe_filename(long_b)
    assert safe_filename(long_a).startswith("x" * 80)  # still readable


def test_inside_refuses_a_path_that_resolves_elsewhere(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "link").symlink_to(tmp_path)  # a link planted in the workspace
    assert inside(tmp_path / "ws", tmp_path / "ws" / "runs" / "x") == tmp_path / "ws" / "runs" / "x"
    with pytest.raises(ConfigError, match="outside"):
        inside(tmp_path / "ws", tmp_path / "ws" / ".." / "x")
    with pytest.raises(ConfigError, match="outside"):
        inside(tmp_path / "ws", tmp_path / "ws" / "link" / "x")
