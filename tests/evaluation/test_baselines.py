"""Baselines on tiny synthetic tasks, and the TF-IDF reference numbers on the real shared data."""

from __future__ import annotations

import numpy as np
import pytest

from mtpeft.data.example import Example
from mtpeft.data.formats.base import load_split
from mtpeft.evaluation import baselines
from mtpeft.evaluation.baselines import ranks_from_scores, retrieval_ranks, run_baselines, subtokens
from mtpeft.tasks.registry import get_task
from mtpeft.tasks.spec import TaskSpec

BINARY = TaskSpec(name="bug", kind="binary", format="jsonl", labels=["0", "1"], metrics=["accuracy", "f1"])
MULTI = TaskSpec(name="cx", kind="multiclass", format="jsonl", labels=["a", "b", "c"], metrics=["accuracy"])
PAIR = TaskSpec(name="clone", kind="pair", format="jsonl", labels=["0", "1"], metrics=["f1", "accuracy"])
SEARCH = TaskSpec(name="search", kind="retrieval", format="jsonl", metrics=["mrr", "recall@1"])
SUMMARY = TaskSpec(name="sum", kind="generation", format="jsonl", metrics=["exact_match", "bleu"])

VOCAB = {  # each label has its own tell-tale calls; the rest is shared noise
    0: ["free", "strlen", "assert"],
    1: ["memcpy", "gets", "sprintf"],
    2: ["sort", "bsearch", "qsort"],
}
NOISE = ["int", "x", "=", "return", "(", ")", ";", "if", "y", "+"]


def _snippet(label: int, rng: np.random.Generator) -> str:
    words = list(rng.choice(NOISE, 12)) + list(rng.choice(VOCAB[label], 2))
    return " ".join(rng.permutation(words))


def _classification(n: int, labels: list[int], seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    picked = rng.choice(labels, n, p=None)
    return [Example(id=str(i), code=_snippet(int(y), rng), label=int(y)) for i, y in enumerate(picked)]


def test_majority_predicts_the_most_frequent_train_label():
    train = [Example(id=str(i), code="x", label=1 if i < 7 else 0) for i in range(10)]
    test = [Example(id=str(i), code="x", label=i % 2) for i in range(10)]
    result = run_baselines(BINARY, train, test)
    assert result["majority"] == {"accuracy": 0.5, "f1": pytest.approx(2 / 3)}  # always "1": P=0.5, R=1


def test_tfidf_beats_random_on_an_easy_separable_task():
    train, test = _classification(200, [0, 1], seed=0), _classification(100, [0, 1], seed=1)
    result = run_baselines(BINARY, train, test, seed=0)
    assert set(result) == {"majority", "random", "tfidf"}
    assert result["tfidf"]["accuracy"] > 0.95
    assert 0.3 < result["random"]["accuracy"] < 0.7


def test_multiclass_baselines():
    train, test = _classification(300, [0, 1, 2], seed=2), _classification(90, [0, 1, 2], seed=3)
    result = run_baselines(MULTI, train, test)
    assert result["tfidf"]["accuracy"] > 0.9 > result["random"]["accuracy"]


def test_baselines_are_seeded():
    train, test = _classification(60, [0, 1], seed=0), _classification(40, [0, 1], seed=1)
    assert run_baselines(BINARY, train, test, seed=3) == run_baselines(BINARY, train, test, seed=3)


def test_a_single_class_train_split_still_gives_baselines():
    train = [Example(id=str(i), code="a b c", label=1) for i in range(5)]
    test = [Example(id="t", code="a b", label=1)]
    assert run_baselines(BINARY, train, test)["tfidf"]["accuracy"] == 1.0


def _pairs(n: int, seed: int) -> list[Example]:
    """Clones: the same snippet with two tokens changed; non-clones: unrelated snippets."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        code = _snippet(int(rng.integers(3)), rng) + f" f{i} g{i}"
        clone = i % 2 == 1
        other = code.replace(f"f{i}", f"h{i}") if clone else _snippet(int(rng.integers(3)), rng)
        pairs.append(Example(id=f"a{i}", id_b=f"b{i}", code=code, code_b=other, label=int(clone)))
    return pairs


def test_pair_tfidf_beats_random():
    result = run_baselines(PAIR, _pairs(200, 0), _pairs(100, 1))
    assert result["tfidf"]["f1"] > 0.9
    assert result["tfidf"]["f1"] > result["random"]["f1"] + 0.3


def _search(n: int, seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    names = ["parse", "write", "close", "open", "read", "sort", "merge", "split", "load", "save", "send"]
    objects = ["File", "Socket", "Buffer", "Header", "Token", "Cache", "Queue", "Frame", "Table", "Index"]
    examples = []
    for i in range(n):
        verb, noun = rng.choice(names), rng.choice(objects)
        code = f"void {verb}{noun}{i} ( ) {{ {noun.lower()} . {verb} ( ) ; }}"
        examples.append(Example(id=str(i), code=code, query=f"{verb} the {noun.lower()} number {i}"))
    return examples


def test_retrieval_baselines_rank_the_right_code_first():
    result = run_baselines(SEARCH, _search(100, 0), _search(60, 1))
    assert set(result) == {"random", "tfidf"}  # no majority answer in retrieval
    assert result["tfidf"]["mrr"] > 0.8
    assert result["random"]["mrr"] < 0.3


def test_generation_tfidf_returns_the_nearest_train_target():
    train = [
        Example(id="1", code="int add ( int a , int b ) { return a + b ; }", target="adds two numbers"),
        Example(id="2", code="void close ( File f ) { f . close ( ) ; }", target="closes a file"),
        Example(id="3", code="void close ( File f ) { f . close ( ) ; }", target="closes a file"),
    ]
    test = [Example(id="t", code="int add ( int x , int y ) { return x + y ; }", target="adds two numbers")]
    result = run_baselines(SUMMARY, train, test)
    assert result["tfidf"]["exact_match"] == 1.0
    assert result["majority"]["exact_match"] == 0.0  # "closes a file" is the most frequent target


def test_subtokens_split_identifiers_for_matching_text_to_code():
    assert subtokens("parseHTTPResponse_v2(x)") == ["parse", "http", "response", "v", "2", "x"]


def test_retrieval_ranks_of_the_diagonal():
    scores = np.array([[0.9, 0.1, 0.2], [0.5, 0.3, 0.8], [0.1, 0.7, 0.6]])  # query x code
    assert retrieval_ranks(np.eye(3), scores.T).tolist() == [1, 3, 2]
    assert ranks_from_scores(scores).tolist() == [1, 3, 2]


def test_ties_count_against_the_model():
    # A collapsed model scoring every candidate equally must not get a perfect rank.
    assert ranks_from_scores(np.zeros((4, 4))).tolist() == [4, 4, 4, 4]
    assert retrieval_ranks(np.ones((4, 2)), np.ones((4, 2))).tolist() == [4, 4, 4, 4]


def test_retrieval_ranks_in_chunks_equal_the_full_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    queries, codes = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    monkeypatch.setattr(baselines, "_SCORE_CHUNK", 7)
    assert retrieval_ranks(queries, codes).tolist() == ranks_from_scores(queries @ codes.T).tolist()


# ---- the reference numbers in shared/data/README.md ---------------------------------------------------
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("task_name", "folder", "metric", "reference"),
    [("vulnerability", "reveal-chrome", "accuracy", 0.72), ("flaky", "flakeflagger", "f1", 0.81)],
)
def test_tfidf_matches_the_readme_reference(shared_data, task_name, folder, metric, reference):
    task = get_task(task_name)
    train, test = (load_split(task, shared_data / folder, split) for split in ("train", "test"))
    result = run_baselines(task, train, test, seed=0)
    assert result["tfidf"][metric] == pytest.approx(reference, abs=0.05)
    assert result["tfidf"][metric] > max(result["majority"][metric], result["random"][metric]) + 0.15
