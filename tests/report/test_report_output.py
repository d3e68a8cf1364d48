"""`mtpeft report --out DIR`: a report file is never left half-written, and never written over the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtpeft.errors import InputError
from mtpeft.layout import store_path
from mtpeft.report import build
from mtpeft.report.build import build_report
from mtpeft.study.synthetic import synthetic_spec, synthetic_store


@pytest.fixture
def workspace(tmp_path) -> Path:
    root = tmp_path / "ws"
    synthetic_store(synthetic_spec(workspace=root, methods=["lora"], seeds=[0]), per_example=False)
    return root


def test_a_report_that_fails_part_way_leaves_the_previous_files_whole(workspace, tmp_path, monkeypatch):
    out = tmp_path / "report"
    first = build_report(workspace, out)
    before = first.html.read_bytes()

    def crashes(_document) -> str:
        raise MemoryError  # any failure while the HTML is rendered

    monkeypatch.setattr("mtpeft.report.html.render_html", crashes)
    with pytest.raises(MemoryError):
        build_report(workspace, out)
    assert first.html.read_bytes() == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_runs_csv_interrupted_mid_write_keeps_the_old_one(workspace, tmp_path, monkeypatch):
    out = tmp_path / "report"
    csv_path = build_report(workspace, out).csv
    before = csv_path.read_text()

    class Interrupted(Exception):
        pass

    def writer_that_dies(stream):
        class Dying:
            def writerow(self, row):
                stream.write(",".join(map(str, row)) + "\r\n")
                raise Interrupted

        return Dying()

    monkeypatch.setattr(build.csv, "writer", writer_that_dies)
    with pytest.raises(Interrupted):
        build_report(workspace, out)
    assert csv_path.read_text() == before


def test_a_report_file_linked_to_the_store_is_refused(workspace, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").symlink_to(store_path(workspace))
    size = store_path(workspace).stat().st_size
    with pytest.raises(InputError, match="is the input"):
        build_report(workspace, out)
    assert store_path(workspace).stat().st_size == size


def test_an_out_that_is_a_file_is_one_message(workspace, tmp_path):
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(InputError, match="is a file; the report needs a folder"):
        build_report(workspace, tmp_path / "notes.md")
    assert (tmp_path / "notes.md").read_text() == "mine"
