"""table, json and html reports: what a user reads, with hostile names printed as written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from scan_fakes import SAMPLE_PROJECT, FakeAnalyzer, write_tree

from mtpeft.scan import FORMATS, ReportOptions, save_report, scan_tree, to_json, write_report
from mtpeft.scan.result import ScanResult

HOSTILE = {
    "a&b/<script>.py": "def x():\n    return eval('<script>alert(1)</script>')\n",
    "ops.cpp": "struct V { bool operator<(const V& o) const { return strcpy(a, b) < 0; } };\n",
    ":thumbs_up:.py": "def smile():\n    '[link=http://x]y[/link]'\n    return eval('1')\n",
}


@pytest.fixture
def result(tmp_path: Path) -> ScanResult:
    root = write_tree(tmp_path / "project", {**SAMPLE_PROJECT, **HOSTILE})
    return scan_tree(root, FakeAnalyzer(max_tokens=8), progress=False)


def render(result: ScanResult, fmt: str, **options: object) -> str:
    out = io.StringIO()
    write_report(result, fmt, out, ReportOptions(**options))  # type: ignore[arg-type]
    return out.getvalue()


def test_registry_has_the_four_formats() -> None:
    assert set(FORMATS) == {"table", "json", "sarif", "html"}


def test_unknown_format_is_an_error_naming_the_choices(result: ScanResult) -> None:
    with pytest.raises(ValueError, match="html"):
        write_report(result, "xml", io.StringIO())


def test_table_prints_paths_and_names_literally(result: ScanResult) -> None:
    text = render(result, "table", width=200)
    assert "[red].py:1" in text  # would vanish if read as rich markup
    assert "a&b/<script>.py:1" in text
    assert ":thumbs_up:.py:1" in text  # not turned into an emoji
    assert "V::operator<" in text
    assert "src/util.c:2" in text and "error" in text
    assert "Skipped files (2)" in text and "legacy.py" in text and "not UTF-8" in text
    assert "Clone pairs" in text
    # The truncation count a user is told about (the fake counts words; the limit here is 8).
    assert f"{len(result.truncated)} functions truncated to 8 tokens" in text
    assert len(result.truncated) > 0


def test_json_follows_the_documented_schema(result: ScanResult) -> None:
    data = json.loads(render(result, "json"))
    assert data["schema"] == "mtpeft.scan/1"
    assert set(data) == {
        "schema", "tool", "root", "run", "max_tokens", "thresholds", "tasks", "units", "findings",
        "clone_pairs", "skipped", "summary", "timings", "notes",
    }  # fmt: skip
    assert data["run"] == {"run": "fake-run", "model": "fake"}
    unit = data["units"][data["findings"][0]["unit"]]
    assert set(unit) == {
        "id", "path", "language", "name", "kind", "start_line", "start_column", "end_line", "end_column",
        "hash", "truncated", "answers",
    }  # fmt: skip
    complexity = next(u["answers"]["complexity"] for u in data["units"] if "complexity" in u["answers"])
    assert complexity["positive_probability"] is None and complexity["level"] is None  # informative only
    assert data["summary"]["skipped"] == 2 and data["summary"]["exact_duplicates"] == 1
    assert data["summary"]["truncated"] == len(result.truncated)
    assert {t["name"]: t["applies_to"] for t in data["tasks"]}["flaky"] == ["test"]
    with_code = to_json(result, ReportOptions(include_code=True))
    assert all("code" in u for u in with_code["units"])


def test_html_is_self_contained_and_escaped(result: ScanResult, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    save_report(result, "html", path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # the file named <script>.py is text, not a tag
    assert "a&amp;b/&lt;script&gt;.py" in page
    assert "V::operator&lt;" in page
    assert "[red].py" in page
    assert "http" not in page.replace(
        "http://x", ""
    )  # no external resource (the one URL is escaped user text)
    assert "legacy.py" in page and "Clone pairs" in page


def test_every_format_writes_for_an_empty_tree(tmp_path: Path) -> None:
    empty = scan_tree(tmp_path, FakeAnalyzer(), progress=False)
    for fmt in FORMATS:
        assert render(empty, fmt)
