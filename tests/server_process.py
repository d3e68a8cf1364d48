"""Start an mtpeft server command as a real process on port 0 and stop it; shared by the process tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

READY = re.compile(r"serving on (http://\S+)")  # the line `mtpeft serve` and `lm-serve` print when ready


def start_server(
    command: list[str], log: Path, pattern: re.Pattern = READY, timeout: float = 120
) -> tuple[subprocess.Popen, str]:
    """The process and the URL its ready line names; fails the test with the log if it dies or stalls."""
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(encoding="utf-8"))
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            pytest.fail(f"{' '.join(command[1:])} exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"{' '.join(command[1:])} did not start within {timeout} s:\n{log.read_text()}")


def stop_server(process: subprocess.Popen, timeout: float = 20) -> None:
    """Ctrl-C as a user would; kill only if it does not stop in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serving(command: list[str], log: Path, pattern: re.Pattern = READY) -> Iterator[str]:
    """The server's URL while it runs; stopped with Ctrl-C after, and it must have exited cleanly."""
    process, url = start_server(command, log, pattern)
    try:
        yield url
    finally:
        stop_server(process)
    assert process.returncode in (0, -signal.SIGINT), log.read_text()
