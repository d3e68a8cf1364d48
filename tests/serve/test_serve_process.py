"""`mtpeft serve` as a real process on loopback: concurrent clients get what `run.analyze` gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SNIPPETS = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def add(a, b):\n    return a + b\n",
    "public int size() { return items.length; }",
    "for (i = 0; i < n; i++) { for (j = 0; j < n; j++) { s += a[i][j]; } }",
    "void g() { free(p); free(p); }",
    "x = [y * 2 for y in range(10) if y % 3]",
]
READY = re.compile(r"serving on (http://\S+)")


@pytest.fixture
def server(served_run_dir: Path, tmp_path: Path) -> Iterator[str]:
    """The CLI in a subprocess on port 0; yields its base URL once it says it is serving."""
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "mtpeft.cli.main", "serve", str(served_run_dir), "--port", "0"]
    command += ["--batch-wait-ms", "20", "--device", "cpu"]
    with open(log, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ.copy())
    try:
        yield _wait_ready(process, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode in (0, -signal.SIGINT), log.read_text()


def _wait_ready(process: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = READY.search(log.read_text(encoding="utf-8"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"mtpeft serve exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    pytest.fail(f"mtpeft serve did not start within {timeout} s:\n{log.read_text()}")


def test_concurrent_clients_get_the_python_apis_answers(server: str, served_run) -> None:
    import httpx

    def ask(snippet: str) -> dict:
        reply = httpx.post(f"{server}/v1/analyze", json={"snippets": [snippet]}, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()["snippets"][0]

    requests = SNIPPETS * 4  # 24 requests from 12 threads: the server gathers them into shared batches
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, requests))
    expected = served_run.analyze(requests)
    for got, want in zip(answers, expected, strict=True):
        assert set(got) == set(want)
        for task, prediction in want.items():
            assert got[task]["label"] == prediction["label"]
            for label, probability in prediction["probabilities"].items():
                assert got[task]["probabilities"][label] == pytest.approx(probability, abs=1e-5)
    metrics = httpx.get(f"{server}/metrics").text
    passes = float(re.search(r"mtpeft_backbone_passes_total\{[^}]*\} (\S+)", metrics).group(1))
    assert passes < len(requests), "concurrent requests should share backbone passes"
