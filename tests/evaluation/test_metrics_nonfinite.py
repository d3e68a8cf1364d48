"""Metrics never turn NaN/inf inputs into inf, NaN or out-of-range scores (a diverged model's outputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtpeft.errors import MtpeftError
from mtpeft.evaluation import baselines
from mtpeft.evaluation.baselines import ranks_from_scores, retrieval_ranks, worst_for_nan
from mtpeft.evaluation.metrics import bootstrap_ci, compute_metrics

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

RANKING = ["mrr", "recall@1", "recall@5", "recall@10"]
LABELS = ["accuracy", "mcc", "macro_f1"]
BINARY = ["accuracy", "f1", "precision", "recall", "mcc", "macro_f1"]
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)


def _square(n: int):
    return hnp.arrays(np.float32, (n, n), elements=ANY_FLOAT)


def _in_range(metrics: dict[str, float]) -> bool:
    low = {"mcc": -1.0}
    return all(math.isfinite(v) and low.get(k, 0.0) <= v <= 1.0 for k, v in metrics.items())


def test_nan_embeddings_gave_an_infinite_mrr_and_now_rank_last():
    # The bug: NaN scores compare false, so the correct candidate got rank 0 and MRR 1/0 = inf.
    queries = np.full((4, 3), np.nan, dtype=np.float32)
    codes = np.ones((4, 3), dtype=np.float32)
    ranks = retrieval_ranks(queries, codes)
    assert ranks.tolist() == [4, 4, 4, 4]
    assert compute_metrics(["mrr"], ranks=ranks)["mrr"] == pytest.approx(1 / 4)


def test_a_nan_wrong_candidate_does_not_outrank_the_correct_one_and_a_nan_correct_one_is_last():
    scores = np.array([[0.9, np.nan, 0.1], [np.nan, np.nan, 0.5], [0.2, 0.3, np.inf]])
    assert ranks_from_scores(scores).tolist() == [1, 3, 1]
    assert worst_for_nan(scores)[1, 0] == -np.inf


@given(st.integers(1, 12).flatmap(_square))
def test_ranks_of_any_scores_lie_between_1_and_the_candidate_count(scores):
    ranks = ranks_from_scores(scores)
    assert ranks.min() >= 1 and ranks.max() <= len(scores)
    assert _in_range(compute_metrics(RANKING, ranks=ranks))


@given(
    st.integers(1, 10).flatmap(lambda n: st.tuples(*[hnp.arrays(np.float32, (n, 3), elements=ANY_FLOAT)] * 2))
)
def test_ranks_of_any_embeddings_match_the_full_matrix_in_chunks(embeddings):
    queries, codes = embeddings
    with np.errstate(invalid="ignore", over="ignore"):
        full = ranks_from_scores(queries @ codes.T)
    original = baselines._SCORE_CHUNK
    baselines._SCORE_CHUNK = 3  # not monkeypatch: hypothesis reruns the body, a fixture would not reset
    try:
        chunked = retrieval_ranks(queries, codes)
    finally:
        baselines._SCORE_CHUNK = original
    # Exact ties are not stable across BLAS kernels: a chunk of another shape may round one of several
    # mathematically equal scores by an ulp (seen under load, with a 1-row chunk). Rows whose correct
    # score is within float32 noise of another candidate's may rank differently; every other row must not.
    with np.errstate(invalid="ignore", over="ignore"):
        scores = queries.astype(np.float64) @ codes.T.astype(np.float64)
        overflowed = ~np.isfinite(queries @ codes.T).all(axis=1)  # float32 inf: order among infs is moot
    correct = np.diag(scores)[:, None]
    noise = 1e-5 * np.maximum(np.abs(scores), np.abs(correct)) + 1e-30
    near_tie = ((np.abs(scores - correct) <= noise).sum(axis=1) > 1) | ~np.isfinite(scores).all(axis=1)
    near_tie |= overflowed
    clear = ~near_tie
    assert chunked[clear].tolist() == full[clear].tolist()
    assert chunked.min() >= 1 and chunked.max() <= len(queries)


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=100)  # scikit-learn per example: the range is its guarantee, checked lightly
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
        )
    )
)
def test_binary_metrics_of_any_predictions_stay_in_range(labels):
    y_true, y_pred = labels
    assert _in_range(compute_metrics(BINARY, y_true=y_true, y_pred=y_pred))


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=100)  # scikit-learn per example: the range is its guarantee, checked lightly
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
        )
    )
)
def test_multiclass_metrics_of_any_predictions_stay_in_range(labels):
    y_true, y_pred = labels
    assert _in_range(compute_metrics(LABELS, y_true=y_true, y_pred=y_pred))


def test_argmax_of_nan_logits_is_still_a_label_and_scores_in_range():
    import torch

    logits = torch.tensor([[math.nan, 0.0], [0.0, math.nan], [math.inf, -math.inf], [math.nan, math.nan]])
    y_pred = logits.softmax(-1).argmax(-1).tolist()
    assert _in_range(compute_metrics(BINARY, y_true=[0, 1, 1, 0], y_pred=y_pred))


@pytest.mark.parametrize(
    ("ranks", "shown"),
    [([1, 0, 2], "0.0 at position 1"), ([1, np.nan], "nan at position 1"), ([np.inf], "inf")],
)
def test_ranks_that_would_give_inf_or_nan_are_refused_by_name(ranks, shown):
    with pytest.raises(MtpeftError, match=rf"metric 'mrr': ranks must be finite and >= 1.*{shown}"):
        compute_metrics(["mrr"], ranks=ranks)
    with pytest.raises(MtpeftError, match="ranks must be finite"):
        bootstrap_ci(["mrr"], {"ranks": ranks})


@pytest.mark.parametrize("y_pred", [[0, 1, math.nan], [0, -1, 1], [0.5, 1, 0]])
def test_labels_that_are_not_label_indices_are_refused(y_pred):
    with pytest.raises(MtpeftError, match="y_pred must be label indices"):
        compute_metrics(["accuracy"], y_true=[0, 1, 1], y_pred=y_pred)


@given(hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(1, 1e6)))
def test_bootstrap_intervals_of_valid_ranks_are_finite_and_in_range(ranks):
    low, high = bootstrap_ci(["mrr"], {"ranks": ranks}, n=50)["mrr"]
    assert 0 <= low <= high <= 1
