"""A deterministic fake Analyzer for the scan tests, and a helper to lay out source trees.

Its answers depend only on the code's text, so tests can predict them:
- vulnerability (binary): P(1) = 0.95 with ``strcpy(`` or ``eval(``, 0.75 with ``system(``,
  0.55 with ``gets(``, else 0.10;
- flaky (binary): P(1) = 0.92 with ``sleep``, else 0.20;
- complexity (multiclass): ``n_square`` with two ``for``, ``n`` with one, else ``1``, probability 0.8;
- clone (pair): P(1) = Jaccard similarity of the two token sets;
- embeddings: hashed bag of tokens (similar code, similar vectors);
- tokens: whitespace-separated words.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mtpeft.scan.analyzer import Answer, TaskSpec

WORD = re.compile(r"\w+")

DEFAULT_TASKS = (
    TaskSpec(
        "vulnerability",
        "binary",
        ("0", "1"),
        base="vulnerability",
        description="Is this function vulnerable?",
    ),
    TaskSpec("complexity", "multiclass", ("1", "logn", "n", "nlogn", "n_square"), base="complexity"),
    TaskSpec("flaky", "binary", ("0", "1"), base="flaky", description="Is this test flaky?"),
    TaskSpec("clone", "pair", ("0", "1"), base="clone", description="Are these two functions clones?"),
    TaskSpec("code-search", "retrieval", base="code-search"),
)


def _binary(p_positive: float) -> Answer:
    return Answer("1", p_positive) if p_positive >= 0.5 else Answer("0", 1.0 - p_positive)


def vulnerability_probability(code: str) -> float:
    for marker, p in (("strcpy(", 0.95), ("eval(", 0.95), ("system(", 0.75), ("gets(", 0.55)):
        if marker in code:
            return p
    return 0.10


class FakeAnalyzer:
    def __init__(self, tasks: Sequence[TaskSpec] = DEFAULT_TASKS, max_tokens: int = 64) -> None:
        self._tasks = {t.name: t for t in tasks}
        self._max_tokens = max_tokens
        # (snippets, tasks, max_tokens) of each analyze call
        self.analyze_calls: list[tuple[int, tuple[str, ...], int | None]] = []
        self.embedded: list[str] = []
        self.compared: list[tuple[str, str]] = []

    @property
    def tasks(self) -> Mapping[str, TaskSpec]:
        return self._tasks

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def info(self) -> Mapping[str, str]:
        return {"run": "fake-run", "model": "fake"}

    def count_tokens(self, codes: Sequence[str]) -> list[int]:
        return [len(code.split()) for code in codes]

    def analyze(
        self, codes: Sequence[str], tasks: Sequence[str], *, max_tokens: int | None
    ) -> list[dict[str, Answer]]:
        self.analyze_calls.append((len(codes), tuple(tasks), max_tokens))
        return [{task: self._answer(task, code) for task in tasks} for code in codes]

    def _answer(self, task: str, code: str) -> Answer:
        if task == "vulnerability":
            return _binary(vulnerability_probability(code))
        if task == "flaky":
            return _binary(0.92 if "sleep" in code else 0.20)
        if task == "complexity":
            loops = len(re.findall(r"\bfor\b", code))
            return Answer("n_square" if loops >= 2 else "n" if loops else "1", 0.8)
        raise AssertionError(f"analyze asked for task {task!r}")

    def embed(self, codes: Sequence[str], *, max_tokens: int | None) -> np.ndarray:
        self.embedded.extend(codes)
        out = np.zeros((len(codes), 64), dtype=np.float32)
        for row, code in enumerate(codes):
            for word in WORD.findall(code):
                out[row, zlib.crc32(word.encode()) % 64] += 1.0
        return out

    def compare(
        self, codes_a: Sequence[str], codes_b: Sequence[str], task: str, *, max_tokens: int | None
    ) -> list[Answer]:
        assert self._tasks[task].kind == "pair" and len(codes_a) == len(codes_b)
        pairs = list(zip(codes_a, codes_b, strict=True))
        self.compared.extend(pairs)
        answers = []
        for a, b in pairs:
            sa, sb = set(WORD.findall(a)), set(WORD.findall(b))
            answers.append(_binary(len(sa & sb) / max(len(sa | sb), 1)))
        return answers


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create ``files`` (relative path -> text or bytes) under ``root``; returns root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def _summing(name: str, op: str) -> str:
    lines = "\n".join(f"    total = total {op} values[{i}] * weights[{i}] + offsets[{i}]" for i in range(6))
    return f"def {name}(values, weights, offsets):\n    total = 0\n{lines}\n    return total\n"


SAMPLE_PROJECT: dict[str, str | bytes] = {
    "src/util.c": (
        "#include <string.h>\n"
        "void copy(char *dst, const char *src) {\n    strcpy(dst, src);\n}\n\n"
        "int run(const char *cmd) {\n    return system(cmd);\n}\n\n"
        "char *read_line(char *buf) {\n    return gets(buf);\n}\n\n"
        "int add(int a, int b) {\n    return a + b;\n}\n"
    ),
    "src/app.py": "def evaluate(expr):\n    return eval(expr)\n\n\n" + _summing("weighted_sum", "+"),
    "src/copy.py": _summing("weighted_sum", "+"),  # an exact duplicate of app.weighted_sum
    "src/near.py": _summing("weighted_total", "+").replace("offsets[5]", "offsets[4]"),  # a near-miss clone
    "tests/test_app.py": (
        "import time\n\n\ndef test_slow():\n    time.sleep(1)\n    assert True\n\n\n"
        "def test_fast():\n    assert 1 + 1 == 2\n"
    ),
    "src/FooTest.java": (
        "class FooTest {\n    @Test\n    public void waits() throws Exception {\n"
        "        Thread.sleep(100);\n    }\n}\n"
    ),
    "[red].py": "def styled():\n    return eval('[bold]1[/bold]')\n",
    "bin/blob.c": b"\x00\x01\x02binary",
    "legacy.py": "def caf\xe9():\n    pass\n".encode("latin-1"),
}
