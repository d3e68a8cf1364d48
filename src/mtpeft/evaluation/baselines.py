"""Trivial and classical baselines, trained on the same train split as the model (scikit-learn).

- majority: the most frequent train label (classification); identity order (retrieval).
- random: seeded uniform labels / a seeded random ranking.
- tfidf: TF-IDF over code tokens (identifiers split from punctuation by the token pattern below)
  + logistic regression for classification; for pairs, similarity features of the two TF-IDF
  vectors + logistic regression; for retrieval, TF-IDF cosine ranking of every test candidate;
  for generation, the target of the nearest train example by TF-IDF cosine.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from mtpeft.data.example import Example
from mtpeft.evaluation.metrics import compute_metrics
from mtpeft.tasks.spec import TaskKind, TaskSpec

# Identifiers, numbers and single punctuation characters: code-aware, unlike the default word pattern.
CODE_TOKEN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]"


def _vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(
        token_pattern=CODE_TOKEN_PATTERN,
        lowercase=False,
        max_features=50_000,
        sublinear_tf=True,
        dtype=np.float32,
    )


def retrieval_ranks(query_emb, code_emb) -> np.ndarray:
    """1-based rank of the correct (diagonal) candidate for each query, from query x code scores."""
    scores = (
        np.asarray(query_emb @ code_emb.T)
        if not hasattr(query_emb, "toarray")
        else (query_emb @ code_emb.T).toarray()
    )
    correct = np.diag(scores)[:, None]
    return (scores > correct).sum(axis=1) + 1


def _pair_features(vec: TfidfVectorizer, examples: list[Example]) -> np.ndarray:
    a = normalize(vec.transform([e.code for e in examples]))
    b = normalize(vec.transform([e.code_b or "" for e in examples]))
    cosine = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    len_a = np.array([len(e.code) for e in examples], dtype=float)
    len_b = np.array([len(e.code_b or "") for e in examples], dtype=float)
    ratio = np.minimum(len_a, len_b) / np.maximum(np.maximum(len_a, len_b), 1)
    return np.stack([cosine, ratio, cosine * ratio], axis=1)


def _tfidf_classify(task: TaskSpec, train: list[Example], test: list[Example], seed: int) -> list[int]:
    y = [e.label for e in train]
    if len(set(y)) < 2:
        return [y[0]] * len(test)
    vec = _vectorizer()
    if task.kind == TaskKind.PAIR:
        vec.fit([e.code for e in train] + [e.code_b or "" for e in train])
        x_train, x_test = _pair_features(vec, train), _pair_features(vec, test)
    else:
        x_train = vec.fit_transform([e.code for e in train])
        x_test = vec.transform([e.code for e in test])
    model = LogisticRegression(max_iter=2000, C=4.0, random_state=seed)
    return model.fit(x_train, y).predict(x_test).tolist()


def _classification(task: TaskSpec, train: list[Example], test: list[Example], seed: int) -> dict:
    y_true = [e.label for e in test]
    counts = np.bincount([e.label for e in train], minlength=task.num_labels)
    rng = np.random.default_rng(seed)
    predictions = {
        "majority": [int(counts.argmax())] * len(test),
        "random": rng.integers(0, task.num_labels, len(test)).tolist(),
        "tfidf": _tfidf_classify(task, train, test, seed),
    }
    return {
        name: compute_metrics(task.metrics, y_true=y_true, y_pred=pred) for name, pred in predictions.items()
    }


def _retrieval(task: TaskSpec, train: list[Example], test: list[Example], seed: int) -> dict:
    n = len(test)
    rng = np.random.default_rng(seed)
    random_ranks = np.array([int(np.where(rng.permutation(n) == i)[0][0]) + 1 for i in range(n)])
    vec = _vectorizer().fit([e.code for e in train] + [e.query or "" for e in train])
    queries = normalize(vec.transform([e.query or "" for e in test]))
    codes = normalize(vec.transform([e.code for e in test]))
    return {
        "majority": compute_metrics(task.metrics, ranks=np.arange(1, n + 1)),  # candidates in file order
        "random": compute_metrics(task.metrics, ranks=random_ranks),
        "tfidf": compute_metrics(task.metrics, ranks=retrieval_ranks(queries, codes)),
    }


def _generation(task: TaskSpec, train: list[Example], test: list[Example], seed: int) -> dict:
    references = [e.target or "" for e in test]
    vec = _vectorizer().fit([e.code for e in train])
    nearest = (
        (
            normalize(vec.transform([e.code for e in test]))
            @ normalize(vec.transform([e.code for e in train])).T
        )
        .toarray()
        .argmax(axis=1)
    )
    hypotheses = {
        "majority": [train[0].target or ""] * len(test),
        "random": [
            train[i].target or "" for i in np.random.default_rng(seed).integers(0, len(train), len(test))
        ],
        "tfidf": [train[i].target or "" for i in nearest],
    }
    return {
        k: compute_metrics(task.metrics, references=references, hypotheses=h) for k, h in hypotheses.items()
    }


_BY_KIND = {
    TaskKind.BINARY: _classification,
    TaskKind.MULTICLASS: _classification,
    TaskKind.PAIR: _classification,
    TaskKind.RETRIEVAL: _retrieval,
    TaskKind.GENERATION: _generation,
}


def run_baselines(
    task: TaskSpec, train: list[Example], test: list[Example], *, seed: int = 0
) -> dict[str, dict[str, float]]:
    return _BY_KIND[task.kind](task, train, test, seed)
