"""`mtpeft group`: the groups a reader is shown, with their evidence, from a run's files or a study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtpeft.cli.main import main

A, B, C = "py-defect", "py-clone", "py-search"


def _mtpeft(monkeypatch, capsys, *args: str | Path) -> tuple[int, str, str]:
    """`mtpeft ARGS...` through the real entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mtpeft", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def _z(tasks: list[str], gains: dict[tuple[str, str], float]) -> list[list[float]]:
    """Z[i][j] (i's step on j's loss) from what j gets from i."""
    return [[0.1 if i == j else gains[(j, i)] for j in tasks] for i in tasks]


@pytest.fixture
def affinity_run(tmp_path) -> Path:
    """A run directory with only an affinity.json: a and b help each other, c and d hurt everyone."""
    gains = {("a", "b"): 0.3, ("b", "a"): 0.25, ("c", "d"): -0.1, ("d", "c"): -0.1}
    for loner, harm in (("c", -0.2), ("d", -0.3)):
        for friend in "ab":
            gains[(loner, friend)] = gains[(friend, loner)] = harm
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tasks = list("abcd")
    summary = {"every": 5, "tasks": tasks, "measurements": 12, "z": _z(tasks, gains)}
    (run_dir / "affinity.json").write_text(json.dumps(summary))
    return run_dir


def test_groups_a_runs_affinity_and_prints_the_evidence_inside_each_group(monkeypatch, capsys, affinity_run):
    code, out, _ = _mtpeft(monkeypatch, capsys, "group", affinity_run)
    assert code == 0
    lines = out.splitlines()
    assert "4 tasks grouped on lookahead affinity" in lines[0] and "12 measurements" in lines[0]
    assert "module 1: a + b: mean from partners +0.275" in lines
    assert "    a -> b: Z = +0.25; b -> a: Z = +0.3" in lines  # Z[a][b]: a's step on b's loss
    assert "module 2: c (alone)" in lines and "module 3: d (alone)" in lines


def test_a_budget_of_two_modules_puts_the_two_loners_together(monkeypatch, capsys, affinity_run):
    code, out, _ = _mtpeft(monkeypatch, capsys, "group", affinity_run, "--max-groups", "2")
    assert code == 0
    assert "module 2: c + d: mean from partners -0.1" in out.splitlines()
    assert "at most 2 modules" in out


def test_gradient_cosines_when_the_run_measured_no_affinity(monkeypatch, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pairs = {"x | y": {"mean": 0.4, "n": 3}, "x | z": {"mean": -0.3, "n": 3}, "y | z": {"mean": -0.2, "n": 3}}
    (run_dir / "grad_conflict.json").write_text(json.dumps({"every": 1, "measurements": 3, "pairs": pairs}))
    code, out, _ = _mtpeft(monkeypatch, capsys, "group", run_dir)
    assert code == 0 and "grouped on gradient cosine" in out
    assert "module 1: x + y: mean from partners +0.4" in out and "    x / y: cosine = +0.4" in out


def test_a_run_without_either_file_is_explained(monkeypatch, capsys, tmp_path):
    code, _, err = _mtpeft(monkeypatch, capsys, "group", tmp_path)
    assert code == 2
    assert "affinity.json (`affinity: {every: K}`)" in err and "grad_conflict.json" in err
    code, _, err = _mtpeft(monkeypatch, capsys, "group", tmp_path, "--signal", "transfer")
    assert code == 2 and "--study instead of RUN_DIR" in err


def test_a_studys_measured_transfer_and_its_cheap_signals(monkeypatch, capsys, grouping_study):
    code, out, _ = _mtpeft(monkeypatch, capsys, "group", "--workspace", grouping_study)
    assert code == 0 and "grouped on measured transfer from study hand-made" in out
    assert f"module 1: {A} + {B}: {A} 0.750, {B} 0.810 (measured)" in out
    assert f"    T[{A}][{B}] = +0.05; T[{B}][{A}] = +0.01" in out
    code, out, _ = _mtpeft(monkeypatch, capsys, "group", "--workspace", grouping_study, "--signal", "cosine")
    assert code == 0 and f"module 1: {A} + {C}: mean from partners +0.3" in out
    code, _, err = _mtpeft(monkeypatch, capsys, "group", "--workspace", grouping_study, "--arm", "nope")
    assert code == 2 and "minilm / lora" in err  # the arms there are named


def test_help_says_when_to_trust_each_signal_and_the_command_needs_no_torch(affinity_run):
    probe = (
        "import sys\n"
        "from mtpeft.cli.main import app\n"
        f"app(['group', {str(affinity_run)!r}], standalone_mode=False)\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "mtpeft.cli.main", "group", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "When to trust each signal" in " ".join(shown.stdout.split())


@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"[" * 100_000, b'{"measurements": 3, "tasks": '])
def test_a_damaged_affinity_file_is_one_error_naming_it(monkeypatch, capsys, tmp_path, content):
    (tmp_path / "affinity.json").write_bytes(content)
    code, _, err = _mtpeft(monkeypatch, capsys, "group", tmp_path)
    assert code == 2 and "affinity.json is unreadable" in err and "Traceback" not in err
