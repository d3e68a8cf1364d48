"""scan_tree: which units get which tasks, in how many analyzer calls, and what the result says."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from scan_fakes import DEFAULT_TASKS, SAMPLE_PROJECT, FakeAnalyzer, write_tree

from mtpeft.scan import Analyzer, Answer, CloneOptions, TaskSpec, Thresholds, scan_tree


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "project", SAMPLE_PROJECT)


def test_the_fake_implements_the_protocol() -> None:
    assert isinstance(FakeAnalyzer(), Analyzer)


def test_each_batch_is_one_call_answering_every_applicable_task(project: Path) -> None:
    analyzer = FakeAnalyzer()
    result = scan_tree(project, analyzer, batch_size=3, progress=False)
    assert analyzer.analyze_calls, "the analyzer was never asked"
    for size, tasks, max_tokens in analyzer.analyze_calls:
        assert size <= 3 and max_tokens is None  # no limit given: the run keeps each task's own
        assert tasks in {("vulnerability", "complexity"), ("flaky",)}  # never the pair or retrieval task
    # Functions and methods: vulnerability + complexity; tests: flaky only.
    for unit, answers in zip(result.units, result.answers, strict=True):
        expected = {"flaky"} if unit.kind == "test" else {"vulnerability", "complexity"}
        assert set(answers) == expected, unit.name
    n_tests = sum(1 for u in result.units if u.kind == "test")
    assert sum(size for size, tasks, _ in analyzer.analyze_calls if tasks == ("flaky",)) == n_tests == 3


def test_result_holds_units_findings_clones_skips_and_timings(project: Path) -> None:
    result = scan_tree(project, FakeAnalyzer(), progress=False)
    assert result.files == 7 and {s.path for s in result.skipped} == {"bin/blob.c", "legacy.py"}
    findings = {(f.unit.name, f.task.name): f.level for f in result.findings()}
    assert findings[("copy", "vulnerability")] == "error"
    assert findings[("test_slow", "flaky")] == "error"
    assert ("test_fast", "flaky") not in findings and ("add", "vulnerability") not in findings
    assert [(result.units[p.a].path, result.units[p.b].path, p.exact) for p in result.clone_pairs] == [
        ("src/app.py", "src/copy.py", True),
        ("src/app.py", "src/near.py", False),
    ]
    assert result.clone_task == "clone"
    assert set(result.timings) == {"extract", "tokens", "analyze", "clones", "total"}
    assert result.info == {"run": "fake-run", "model": "fake"}


def test_task_selection(project: Path) -> None:
    analyzer = FakeAnalyzer()
    result = scan_tree(project, analyzer, tasks=["flaky"], progress=False)
    assert {call[1] for call in analyzer.analyze_calls} == {("flaky",)}
    assert result.clone_pairs == [] and analyzer.embedded == []  # no pair task selected: no clone search
    assert list(result.tasks) == ["flaky"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['vulnerabilty'\]"):
        scan_tree(project, analyzer, tasks=["vulnerabilty"], progress=False)


def test_clone_search_can_be_switched_off_or_tuned(project: Path) -> None:
    assert scan_tree(project, FakeAnalyzer(), clones=False, progress=False).clone_pairs == []
    strict = scan_tree(project, FakeAnalyzer(), clones=CloneOptions(min_probability=0.99), progress=False)
    assert [p.exact for p in strict.clone_pairs] == [True]


def test_truncation_is_counted_with_the_given_limit(project: Path) -> None:
    analyzer = FakeAnalyzer(max_tokens=1000)
    unlimited = scan_tree(project, analyzer, progress=False)
    assert unlimited.truncated == [] and unlimited.max_tokens == 1000  # counted against the run's limit
    calls_before = len(analyzer.analyze_calls)
    result = scan_tree(project, analyzer, max_tokens=10, progress=False)
    long_units = [i for i, u in enumerate(result.units) if len(u.code.split()) > 10]
    assert result.truncated == long_units and long_units
    assert {call[2] for call in analyzer.analyze_calls[calls_before:]} == {10}  # the limit reaches the model
    assert f"{len(long_units)} functions truncated to 10 tokens" in result.summary()


def test_applies_to_from_the_analyzer_overrides_the_default(project: Path) -> None:
    tasks = [
        TaskSpec("vulnerability", "binary", ("0", "1"), applies_to=frozenset({"function", "method", "test"}))
    ]
    result = scan_tree(project, FakeAnalyzer(tasks=tasks), progress=False)
    assert all("vulnerability" in a for a in result.answers)
    assert "the run has no pair (clone) task: only exact duplicates are reported" in result.notes


class ShortAnalyzer(FakeAnalyzer):
    def analyze(
        self, codes: Sequence[str], tasks: Sequence[str], *, max_tokens: int | None
    ) -> list[dict[str, Answer]]:
        return super().analyze(codes, tasks, max_tokens=max_tokens)[:-1]


def test_a_wrong_answer_shape_is_reported_clearly(project: Path) -> None:
    with pytest.raises(ValueError, match="returned 2 answers for 3 snippets"):
        scan_tree(project, ShortAnalyzer(), batch_size=3, progress=False)


def test_progress_bars_do_not_break_the_scan(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = scan_tree(project, FakeAnalyzer(), progress=True)
    assert result.units
    assert "analyzing" in capsys.readouterr().err


def test_default_tasks_cover_every_kind() -> None:
    assert {t.kind for t in DEFAULT_TASKS} == {"binary", "multiclass", "pair", "retrieval"}


def test_scan_package_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys, mtpeft.scan, mtpeft.scan.report, mtpeft.scan.sarif, mtpeft.scan.html_report;"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


class WrongLabelAnalyzer(FakeAnalyzer):
    """Answers 'vulnerable' where the run's labels are '0'/'1'."""

    def analyze(
        self, codes: Sequence[str], tasks: Sequence[str], *, max_tokens: int | None
    ) -> list[dict[str, Answer]]:
        return [{t: Answer("vulnerable", 0.9) for t in tasks} for _ in codes]


def test_a_label_outside_the_task_labels_is_reported_clearly(project: Path) -> None:
    with pytest.raises(ValueError, match=r"label 'vulnerable' for task '\w+', not one of"):
        scan_tree(project, WrongLabelAnalyzer(), progress=False)


def test_thresholds_parse_and_check() -> None:
    assert Thresholds.parse("0.95,0.8,0.6") == Thresholds(0.95, 0.8, 0.6)
    with pytest.raises(ValueError, match="three numbers"):
        Thresholds.parse("high")
    with pytest.raises(ValueError, match="note <= warning <= error"):
        Thresholds(error=0.5, warning=0.7, note=0.6)
