"""Shared test fixtures: where ../shared/data is, and skipping when it is absent."""

from __future__ import annotations

import io
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTPEFT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The Ctrl-C tests (MTPEFT_INTERRUPT_AT_STEP, servers stopped with SIGINT) need SIGINT handled. A test run
# started in the background of a non-interactive shell (`make test &`) inherits SIGINT *ignored*, and so
# does every process it starts: Ctrl-C would then do nothing and those tests fail for a reason that is
# not the code's. Python's own handler here; child processes then start with SIGINT at its default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:  # Property-based (fuzz) tests: a bounded count in `make test`, many more in `make fuzz`.
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
    )
    settings.register_profile(
        "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(os.environ.get("MTPEFT_FUZZ_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev dependency; the fuzz tests import it themselves
    pass


@pytest.fixture
def shared_data() -> Path:
    """The real benchmark data folder; tests using it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


# ---- a hand-made study for the grouping signals (tests/report, tests/cli) -----------------------------
A, B, C = "py-defect", "py-clone", "py-search"
# The joint run's mean lookahead affinity, Z[i][j] (i's step on j's loss), in the order A, B, C: A and B
# help each other, C is hurt by and hurts both; and its gradient cosines, which pair A with C instead.
GROUPING_AFFINITY = [[0.05, 0.02, -0.01], [0.02, 0.04, -0.01], [-0.01, -0.01, 0.03]]
GROUPING_COSINES = {f"{B} | {A}": -0.2, f"{A} | {C}": 0.3, f"{B} | {C}": -0.1}  # pair keys sort the names


@pytest.fixture
def grouping_study(tmp_path: Path) -> Path:
    """A workspace whose store holds study `hand-made`: three singles, three pairs and the joint run, which
    measured affinity and cosines. Transfer (mean of both ways): A-B +0.03, A-C +0.02, B-C -0.02; the
    measured grouping is {A, B} + {C} (mean 0.687, measured), cosine's {A, C} + {B} reaches 0.680."""
    from mtpeft.store import RunStore
    from mtpeft.study.synthetic import record_scores

    workspace = tmp_path / "ws"
    workspace.mkdir()
    store = RunStore(workspace / "mtpeft.sqlite")
    for scores in ({A: 0.70}, {B: 0.80}, {C: 0.50}):
        record_scores(store, scores)
    record_scores(store, {A: 0.75, B: 0.81})  # T[A][B] = +0.05, T[B][A] = +0.01
    record_scores(store, {A: 0.68, C: 0.56})  # -0.02, +0.06
    record_scores(store, {B: 0.79, C: 0.47})  # -0.01, -0.03
    details = {
        "affinity": {"every": 2, "tasks": [A, B, C], "measurements": 10, "z": GROUPING_AFFINITY},
        "grad_conflict": {
            "every": 2,
            "measurements": 10,
            "pairs": {key: {"mean": value, "n": 10} for key, value in GROUPING_COSINES.items()},
        },
    }
    record_scores(store, {A: 0.72, B: 0.80, C: 0.49}, details=details)
    return workspace


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def mtpeft_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `mtpeft ARGS...` in this process through the real entry point (its error handling included)."""
    from mtpeft.cli.main import main

    def invoke(*args: str | Path, stdin: bytes = b"") -> CliResult:
        monkeypatch.setattr(sys, "argv", ["mtpeft", *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return CliResult(int(exited.value.code or 0), captured.out, captured.err)

    return invoke
