"""Trivial and classical baselines, trained on the same train split the models see.

Every fine-tuned number in a report sits next to these, so "the model learnt something" can be read off
(which baselines a task gets is its kind's choice, `Kind.baselines()` in tasks/kinds/):

- majority: the most frequent train label (generation: the most frequent train target).
- random:   seeded uniform random labels (retrieval: a random ranking; generation: a random train target).
- copy:     generation only: the input itself as the output (hypothesis = the buggy method in repair).
            CodeXGLUE's "naive copy" reference for code-to-code tasks: exact match 0, yet a high BLEU,
            so a repair model has to beat it on BLEU to have learnt more than to echo its input. Scored
            for every generation task; on code-to-text it shows how much BLEU copying code words earns.
- tfidf:    bag of code tokens + scikit-learn; per kind:
    binary / multiclass: TF-IDF of the code + LogisticRegression;
    pair:       cosine of the two TF-IDF vectors, token-count ratio, identifier Jaccard + LogisticRegression;
    retrieval:  TF-IDF cosine between each query and every test candidate, candidates ranked by it;
    generation: the target of the nearest train example by TF-IDF cosine of the code (retrieval, no model).

Fixed settings (scikit-learn defaults where possible: C=1, no tuning), chosen once so the numbers match the
reference TF-IDF scores in shared/data/README.md within a few points; they are baselines, not tuned rivals.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mtpeft.data.example import Example
from mtpeft.evaluation.metrics import compute_metrics
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskSpec

# Code tokens: an identifier (kept whole, case kept), a number, or one punctuation character, so that
# `a->b[i]` gives a, -, >, b, [, i, ] and operators count as evidence (vulnerability and flakiness cues).
CODE_TOKEN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
# Sub-tokens of an identifier: `parseHTTPResponse_v2` -> parse, http, response, v, 2.
_SUBTOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
MIN_DOCUMENTS_FOR_PRUNING = 20
_SCORE_CHUNK = 1024  # query rows scored at a time, bounding memory to chunk x candidates

Predictions = dict[str, Any]  # y_pred | ranks | hypotheses, as compute_metrics takes them


# ---- shared pieces ---------------------------------------------------------------------------------------
def subtokens(text: str) -> list[str]:
    """Lower-cased identifier parts, so a query word meets `closeSelector` (used to match text to code)."""
    return [part.lower() for ident in _IDENTIFIER.findall(text) for part in _SUBTOKEN.findall(ident)]


def code_vectorizer(n_documents: int) -> TfidfVectorizer:
    # min_df=2 drops one-off identifiers (names unique to one function) that only help memorise train;
    # a handful of documents keeps every token so the vocabulary is never empty.
    min_df = 2 if n_documents >= MIN_DOCUMENTS_FOR_PRUNING else 1
    return TfidfVectorizer(
        token_pattern=CODE_TOKEN_PATTERN, lowercase=False, sublinear_tf=True, min_df=min_df, dtype=np.float32
    )


def text_vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(analyzer=subtokens, sublinear_tf=True)


def _classifier(seed: int) -> LogisticRegression:
    # Balanced class weights: flaky tests are ~20% of the data and F1 of that class is the metric.
    return LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)


def _fit_predict(model: Any, x_train: Any, y_train: list[int], x_test: Any) -> list[int]:
    if len(set(y_train)) < 2:  # scikit-learn refuses one class; the only label is the only answer
        return [y_train[0]] * x_test.shape[0]
    return model.fit(x_train, y_train).predict(x_test).tolist()


def _labels(examples: list[Example]) -> list[int]:
    return [int(e.label) for e in examples]  # type: ignore[arg-type]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def worst_for_nan(scores: np.ndarray) -> np.ndarray:
    """NaN scores (a diverged model, inf - inf in a dot product) rank below every number.

    Compared as they are, a NaN correct score is ">=" nothing, giving rank 0 and an MRR of 1/0 = inf;
    as -inf it ties with every candidate and gets the last rank, and a NaN wrong candidate never
    outranks the correct one, so ranks stay in [1, candidates] and MRR in [0, 1].
    """
    scores = np.asarray(scores, dtype=float)
    return np.where(np.isnan(scores), -np.inf, scores)


def _ranks(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    # Ties count against the model (rank = candidates scoring >= the correct one), so a model that
    # scores everything equally gets the last rank, not the first.
    return (worst_for_nan(scores) >= worst_for_nan(correct)[:, None]).sum(axis=1)


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """1-based rank of the diagonal entry in each row (row i's correct candidate is column i)."""
    scores = np.asarray(scores)
    return _ranks(scores, np.diagonal(scores))


def retrieval_ranks(query_emb: Any, code_emb: Any) -> np.ndarray:
    """1-based rank of the correct (diagonal) code for each query under dot-product scores."""
    queries, codes = np.asarray(query_emb), np.asarray(code_emb)
    ranks = []
    for start in range(0, len(queries), _SCORE_CHUNK):
        rows = queries[start : start + _SCORE_CHUNK]
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN embeddings: NaN scores, ranked last
            scores = rows @ codes.T
        ranks.append(_ranks(scores, scores[np.arange(len(rows)), np.arange(start, start + len(rows))]))
    return np.concatenate(ranks)


# ---- classification (binary, multiclass, pair) -------------------------------------------------------
def majority_labels(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    label = Counter(_labels(train)).most_common(1)[0][0]
    return {"y_pred": [label] * len(test)}


def random_labels(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    return {"y_pred": rng.integers(0, task.num_labels, size=len(test)).tolist()}


def tfidf_classifier(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    vectorizer = code_vectorizer(len(train))
    features = vectorizer.fit_transform([e.code for e in train])
    test_features = vectorizer.transform([e.code for e in test])
    return {"y_pred": _fit_predict(_classifier(_seed(rng)), features, _labels(train), test_features)}


def pair_features(vectorizer: TfidfVectorizer, pairs: list[Example]) -> np.ndarray:
    """Per pair: TF-IDF cosine, token-count ratio (short/long), identifier-set Jaccard."""
    left = vectorizer.transform([e.code for e in pairs])
    right = vectorizer.transform([e.code_b or "" for e in pairs])
    cosine = np.asarray(left.multiply(right).sum(axis=1)).ravel()  # rows are L2-normalised
    rows = []
    for example, cos in zip(pairs, cosine, strict=True):
        tokens_a = _IDENTIFIER.findall(example.code)
        tokens_b = _IDENTIFIER.findall(example.code_b or "")
        lengths = sorted((len(tokens_a), len(tokens_b)))
        set_a, set_b = set(tokens_a), set(tokens_b)
        jaccard = len(set_a & set_b) / max(len(set_a | set_b), 1)
        rows.append((cos, lengths[0] / max(lengths[1], 1), jaccard))
    return np.asarray(rows)


def tfidf_pair_classifier(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    functions = sorted({e.code for e in train} | {e.code_b or "" for e in train})
    vectorizer = code_vectorizer(len(functions)).fit(functions)
    model = make_pipeline(StandardScaler(), _classifier(_seed(rng)))
    train_x, test_x = pair_features(vectorizer, train), pair_features(vectorizer, test)
    return {"y_pred": _fit_predict(model, train_x, _labels(train), test_x)}


# ---- retrieval ---------------------------------------------------------------------------------------
def random_ranking(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    return {"ranks": ranks_from_scores(rng.random((len(test), len(test))))}


def tfidf_ranking(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    vectorizer = text_vectorizer().fit([e.query or "" for e in train] + [e.code for e in train])
    queries = vectorizer.transform([e.query or "" for e in test])
    codes = vectorizer.transform([e.code for e in test])
    return {"ranks": ranks_from_scores((queries @ codes.T).toarray())}


# ---- generation --------------------------------------------------------------------------------------
def majority_target(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    target = Counter(e.target or "" for e in train).most_common(1)[0][0]
    return {"hypotheses": [target] * len(test)}


def random_target(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    picks = rng.integers(0, len(train), size=len(test))
    return {"hypotheses": [train[i].target or "" for i in picks]}


def copy_input(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    return {"hypotheses": [e.code for e in test]}


def nearest_neighbour_target(task: TaskSpec, train: list[Example], test: list[Example], rng) -> Predictions:
    vectorizer = code_vectorizer(len(train))
    train_vectors = vectorizer.fit_transform([e.code for e in train])
    hypotheses = []
    for start in range(0, len(test), _SCORE_CHUNK):
        chunk = vectorizer.transform([e.code for e in test[start : start + _SCORE_CHUNK]])
        nearest = np.asarray((chunk @ train_vectors.T).argmax(axis=1)).ravel()
        hypotheses.extend(train[i].target or "" for i in nearest)
    return {"hypotheses": hypotheses}


def run_baselines(
    task: TaskSpec, train: list[Example], test: list[Example], *, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{baseline name: {metric: value}} on `test` for every baseline of the task's kind (tasks/kinds/)."""
    kind = kind_of(task)
    gold = kind.gold(test)
    results = {}
    for name, baseline in kind.baselines().items():
        predictions = baseline(task, train, test, np.random.default_rng(seed))
        results[name] = compute_metrics(task.metrics, **gold, **predictions)
    return results


def score_baseline(
    task: TaskSpec, name: str, train: list[Example], test: list[Example], *, seed: int = 0
) -> dict[str, float]:
    """{metric: value} of one named baseline of the task's kind, fitted on `train`, scored on `test`."""
    kind = kind_of(task)
    predictions = kind.baselines()[name](task, train, test, np.random.default_rng(seed))
    return compute_metrics(task.metrics, **kind.gold(test), **predictions)
