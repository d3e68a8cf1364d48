"""Clone candidates: blockwise nearest neighbours, exact duplicates, confirmation by the pair task."""

from __future__ import annotations

import numpy as np
from scan_fakes import DEFAULT_TASKS, FakeAnalyzer

from mtpeft.scan.clones import CloneOptions, clone_task, find_clones, normalise_rows, top_k_pairs
from mtpeft.scan.units import CodeUnit


def unit(name: str, code: str, language: str = "python", path: str = "m.py") -> CodeUnit:
    lines = code.count("\n") + 1
    return CodeUnit(path, language, name, "function", 1, 1, lines, 2, code)


def body(name: str, ops: str) -> str:
    steps = "\n".join(
        f"    total = total {op} value_{i} * weight_{i} + offset_{i}" for i, op in enumerate(ops)
    )
    return f"def {name}(values, weights):\n    total = 0\n{steps}\n    return total"


def brute_force(vectors: np.ndarray, k: int, min_similarity: float) -> dict[tuple[int, int], float]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    pairs: dict[tuple[int, int], float] = {}
    for i, row in enumerate(sims):
        for j in np.argsort(-row)[:k]:
            if row[j] >= min_similarity:
                key = (min(i, int(j)), max(i, int(j)))
                pairs[key] = float(row[j])
    return pairs


def test_blockwise_top_k_equals_the_full_matrix() -> None:
    rng = np.random.default_rng(0)
    vectors = normalise_rows(rng.normal(size=(300, 16)))
    expected = brute_force(vectors, 4, 0.3)
    for block_bytes in (1, 4 * 300 * 7, 64 * 2**20):  # one row, seven rows, everything at once
        got = top_k_pairs(vectors, 4, 0.3, block_bytes=block_bytes)
        assert got.keys() == expected.keys()
        assert all(abs(got[key] - expected[key]) < 1e-5 for key in got)


def test_blocks_stay_within_the_memory_budget(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    vectors = normalise_rows(np.random.default_rng(1).normal(size=(2000, 8)))
    budget = 4 * 2000 * 50  # 50 rows of 2000 float32
    largest = 0
    real_argpartition = np.argpartition

    def spy(a, kth, axis=-1, **kw):  # type: ignore[no-untyped-def]
        nonlocal largest
        largest = max(largest, a.nbytes)
        return real_argpartition(a, kth, axis=axis, **kw)

    monkeypatch.setattr(np, "argpartition", spy)
    top_k_pairs(vectors, 3, 0.0, block_bytes=budget)
    assert 0 < largest <= budget  # never the 2000 x 2000 matrix (16 MB)


def test_exact_duplicates_are_reported_once_per_copy_without_the_model() -> None:
    same = body("f", "++-")
    units = [
        unit("a", same),
        unit("b", same.replace("    ", "  ")),
        unit("c", same),
        unit("d", body("g", "*/-+")),
    ]
    analyzer = FakeAnalyzer()
    search = find_clones(units, analyzer, clone_task(analyzer), CloneOptions(min_tokens=5), max_tokens=64)
    exact = [(p.a, p.b) for p in search.pairs if p.exact]
    assert exact == [(0, 1), (0, 2)]  # a star: first copy with each other copy
    assert len(analyzer.embedded) == 2  # one representative of the copies, plus d


def test_near_miss_pairs_are_confirmed_by_the_pair_task() -> None:
    units = [
        unit("sum_a", body("sum_a", "++++++")),
        unit("sum_b", body("sum_b", "+++++-")),  # one operator differs: a near-miss clone
        unit(
            "other",
            "def other(path):\n    with open(path) as handle:\n        return handle.read().split()\n",
        ),
        unit("Sum", body("Sum", "++++++"), language="java", path="S.java"),  # another language
    ]
    analyzer = FakeAnalyzer()
    search = find_clones(
        units, analyzer, clone_task(analyzer), CloneOptions(min_tokens=5, min_similarity=0.5), max_tokens=64
    )
    assert [(p.a, p.b, p.exact) for p in search.pairs] == [(0, 1, False)]
    pair = search.pairs[0]
    assert pair.similarity > 0.9 and pair.probability is not None and pair.probability >= 0.5
    assert all("S.java" not in a and "S.java" not in b for a, b in analyzer.compared)


def test_tiny_functions_are_never_clone_candidates() -> None:
    units = [
        unit("get_x", "def get_x(self):\n    return self.x"),
        unit("get_y", "def get_y(self):\n    return self.x"),
    ]
    analyzer = FakeAnalyzer()
    search = find_clones(units, analyzer, clone_task(analyzer), CloneOptions(), max_tokens=64)
    assert search.pairs == [] and search.eligible == 0 and analyzer.embedded == []


def test_without_a_pair_task_only_exact_duplicates_are_reported() -> None:
    analyzer = FakeAnalyzer(tasks=[t for t in DEFAULT_TASKS if t.kind != "pair"])
    same = body("f", "++-")
    units = [unit("a", same), unit("b", same), unit("c", body("c", "++--"))]
    search = find_clones(units, analyzer, clone_task(analyzer), CloneOptions(min_tokens=5), max_tokens=64)
    assert [(p.a, p.b, p.exact) for p in search.pairs] == [(0, 1, True)]
    assert "only exact duplicates" in search.note
    assert analyzer.embedded == []
