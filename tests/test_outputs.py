"""mtpeft.outputs: an output file is never left half-written, and an output that is an input is refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mtpeft.errors import InputError
from mtpeft.outputs import (
    atomic_output,
    check_output,
    refuse_overwriting_inputs,
    same_file,
    write_bytes,
    write_text,
)


class Interrupted(Exception):
    pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_an_interrupted_write_leaves_the_old_file_intact_and_no_temporary_file(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text("old answers\n")
    with pytest.raises(Interrupted), atomic_output(out) as stream:
        stream.write("half of the new")
        assert out.read_text() == "old answers\n"  # not truncated while the new content is written
        raise Interrupted
    assert out.read_text() == "old answers\n"
    assert _leftovers(tmp_path) == []


def test_a_ctrl_c_mid_write_leaves_no_file_where_there_was_none(tmp_path):
    out = tmp_path / "new.jsonl"
    with pytest.raises(KeyboardInterrupt), atomic_output(out) as stream:
        stream.write("partial")
        raise KeyboardInterrupt
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_complete_write_replaces_the_file(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")
    write_text(out, "new\n")
    assert out.read_text() == "new\n"
    write_bytes(out, b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01" and _leftovers(tmp_path) == []


def test_the_replaced_file_keeps_its_permissions(tmp_path):
    out = tmp_path / "shared.csv"
    out.write_text("old")
    out.chmod(0o640)
    write_text(out, "new")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_a_new_file_gets_what_open_would_give_not_mkstemps_0600(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


def test_a_symlinked_output_is_written_through_and_the_link_kept(tmp_path):
    real = tmp_path / "elsewhere" / "real.txt"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_a_device_is_written_directly_not_replaced(tmp_path):
    write_text(os.devnull, "discarded")  # replacing /dev/null with a file (as root) would break the machine
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_an_output_that_is_the_input_is_refused_by_any_spelling(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text('{"code": "x"}\n')
    (tmp_path / "x").mkdir()
    out = {
        "same": Path("in.jsonl"),
        "dotdot": Path("./x/../in.jsonl"),
        "symlink": tmp_path / "alias.jsonl",
        "hardlink": tmp_path / "hard.jsonl",
    }[spelling]
    if spelling == "symlink":
        out.symlink_to(source)
    if spelling == "hardlink":
        os.link(source, out)
    assert same_file(out, source)
    with pytest.raises(InputError, match="is the input") as refused:
        refuse_overwriting_inputs(out, [source])
    assert str(out) in str(refused.value) and "Write to another file" in str(refused.value)
    assert source.read_text() == '{"code": "x"}\n'


def test_an_output_that_is_the_file_behind_stdin_is_refused(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("x\n")
    with source.open("rb") as stdin, pytest.raises(InputError, match="is the input '<stdin>'"):
        refuse_overwriting_inputs(source, [stdin.fileno()], names=["<stdin>"])


def test_other_outputs_are_not_refused(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("x\n")
    refuse_overwriting_inputs(tmp_path / "out.jsonl", [source])  # does not exist yet
    (tmp_path / "copy.jsonl").write_text("x\n")
    refuse_overwriting_inputs(tmp_path / "copy.jsonl", [source])  # same bytes, another file
    refuse_overwriting_inputs(os.devnull, [os.devnull])  # a device is not emptied by writing


def test_an_output_that_cannot_be_written_is_one_message(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(InputError, match="does not exist; create it first"):
        check_output(tmp_path / "missing" / "out.txt")
    with pytest.raises(InputError, match="NUL"):
        write_text(f"{tmp_path}/bad\0name", "x")


def test_a_full_disk_is_one_message_and_the_old_file_stays(tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    out.write_text("old")

    def no_room(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(InputError, match="no space left"):
        write_text(out, "new")
    assert out.read_text() == "old" and _leftovers(tmp_path) == []
