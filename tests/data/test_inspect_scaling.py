"""`data inspect` over many split files costs the same per file at 50 files as at 400 (issue 24, item 17).

Before, each split re-listed and re-sorted the folder twice, and leakage was computed and printed for
every pair of splits: 50 files took 5.9 s, 400 took 127 s, 3,000 did not finish in 300 s. The operation
counts below are exact; the timing bound is loose on purpose (a busy 2-core machine), yet the old
quadratic code was 8x slower per file at 400 than at 50.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path, PurePath

import pytest
from rich.console import Console

from mtpeft.cli import data_build_cmd
from mtpeft.data.inspect import inspect_task
from mtpeft.tasks import get_task


def _folder(root: Path, files: int) -> Path:
    """`files` split files of two distinct snippets each (no leakage between them)."""
    root.mkdir(parents=True)
    for n in range(files):
        rows = [
            {"func": f"int f{n}_{i}(int a) {{ return a + {i}; }}", "target": i, "idx": i} for i in range(2)
        ]
        (root / f"part{n:04d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _inspect_and_print(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[float, str]:
    out = io.StringIO()
    monkeypatch.setattr(data_build_cmd, "console", Console(file=out, width=160))
    started = time.perf_counter()
    data_build_cmd.print_report(inspect_task(get_task("py-defect"), root))
    return time.perf_counter() - started, out.getvalue()


def test_the_folder_is_listed_once_and_leakage_rows_do_not_grow_with_the_square(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", 120)
    listings = []
    original = Path.iterdir

    def counted(self: Path):
        listings.append(self)
        return original(self)

    monkeypatch.setattr(Path, "iterdir", counted)
    report = inspect_task(get_task("py-defect"), root)
    assert len(report.splits) == 120
    assert listings.count(root) == 1  # was 2 per split + 1
    assert report.leakage == {}  # no canonical split, nothing leaks: no row (was 120 * 119 / 2 rows)


def test_file_names_looked_at_per_split_file_do_not_grow_with_the_folder(tmp_path, monkeypatch):
    """Each split matched against every file of the folder was the quadratic part left after listing
    once: count every look at a file name (PurePath.name), per split file, at 40 and at 160 files."""
    looks = [0]
    name = PurePath.name

    def counted(self: PurePath) -> str:
        looks[0] += 1
        return name.fget(self)  # type: ignore[attr-defined]

    per_file = []
    for files in (40, 160):
        root = _folder(tmp_path / f"d{files}", files)
        monkeypatch.setattr(PurePath, "name", property(counted))
        looks[0] = 0
        inspect_task(get_task("py-defect"), root)
        monkeypatch.undo()
        per_file.append(looks[0] / files)
    assert per_file[1] < 1.5 * per_file[0], per_file  # quadratic: 4x


def test_leaking_non_canonical_pairs_are_still_reported(tmp_path):
    root = _folder(tmp_path / "d", 5)
    (root / "part0004.jsonl").write_text(
        (root / "part0001.jsonl").read_text().replace('"idx": 0', '"idx": 7').replace('"idx": 1', '"idx": 8')
    )
    report = inspect_task(get_task("py-defect"), root)
    assert list(report.leakage) == ["part0001->part0004"] and report.leakage_count == 2


def test_cost_per_split_file_stays_flat_from_50_to_400_files(tmp_path, monkeypatch):
    small, large = _folder(tmp_path / "small", 50), _folder(tmp_path / "large", 400)
    _inspect_and_print(small, monkeypatch)  # warm imports and caches
    per_file_small = min(_inspect_and_print(small, monkeypatch)[0] for _ in range(2)) / 50
    seconds, printed = _inspect_and_print(large, monkeypatch)
    assert printed.count("leak ") == 0 and "part0399" in printed
    assert seconds / 400 < 3 * per_file_small + 0.005, (seconds, per_file_small)
