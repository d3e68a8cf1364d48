"""`mtpeft serve` as a real process on loopback: concurrent clients get what `run.analyze` gives."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server_process import serving

SNIPPETS = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def add(a, b):\n    return a + b\n",
    "public int size() { return items.length; }",
    "for (i = 0; i < n; i++) { for (j = 0; j < n; j++) { s += a[i][j]; } }",
    "void g() { free(p); free(p); }",
    "x = [y * 2 for y in range(10) if y % 3]",
]


@pytest.fixture
def server(served_run_dir: Path, tmp_path: Path) -> Iterator[str]:
    """The CLI in a subprocess on port 0; yields its base URL once it says it is serving."""
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "mtpeft.cli.main", "serve", str(served_run_dir), "--port", "0"]
    command += ["--batch-wait-ms", "20", "--device", "cpu"]
    with serving(command, log) as url:
        yield url


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
