"""Metrics equal the libraries' numbers; bootstrap intervals behave as a user reading a report expects."""

from __future__ import annotations

import time

import numpy as np
import pytest
import sacrebleu
from sklearn import metrics as skm

from mtpeft.errors import ConfigError
from mtpeft.evaluation.metrics import (
    METRICS,
    bootstrap_ci,
    compute_metrics,
    metric_direction,
    paired_bootstrap_diff,
)
from mtpeft.evaluation.metrics import _resample_weights as resample_weights

CLASSIFICATION = ["accuracy", "f1", "precision", "recall", "mcc", "macro_f1"]
RANKING = ["mrr", "recall@1", "recall@5", "recall@10"]


def _binary(n: int, accuracy: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, 1 - y_true)
    return {"y_true": y_true, "y_pred": y_pred}


def _multiclass(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 5, n))
    return {"y_true": y_true, "y_pred": y_pred}


def test_classification_metrics_equal_scikit_learn():
    data = _binary(200, 0.7)
    y_true, y_pred = data["y_true"].tolist(), data["y_pred"].tolist()
    got = compute_metrics(CLASSIFICATION, y_true=y_true, y_pred=y_pred)
    assert got == pytest.approx(
        {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "f1": skm.f1_score(y_true, y_pred),
            "precision": skm.precision_score(y_true, y_pred),
            "recall": skm.recall_score(y_true, y_pred),
            "mcc": skm.matthews_corrcoef(y_true, y_pred),
            "macro_f1": skm.f1_score(y_true, y_pred, average="macro"),
        }
    )


def test_f1_is_the_positive_class_score():
    # All wrong on the positive class, all right on the negative one: F1 of class 1 is 0.
    got = compute_metrics(["f1", "accuracy"], y_true=[0, 0, 0, 1], y_pred=[0, 0, 0, 0])
    assert got == {"f1": 0.0, "accuracy": 0.75}


def test_ranking_metrics_from_ranks():
    ranks = [1, 2, 4, 10, 11]
    got = compute_metrics(RANKING, ranks=ranks)
    assert got["mrr"] == pytest.approx(np.mean([1, 1 / 2, 1 / 4, 1 / 10, 1 / 11]))
    assert (got["recall@1"], got["recall@5"], got["recall@10"]) == (0.2, 0.6, 0.8)


def test_generation_metrics():
    refs = ["return a + b ;", "int x = 0 ;", "foo ( bar ) ;"]
    hyps = ["return a + b ;", "int x  = 1 ;", "foo ( baz ) ;"]
    got = compute_metrics(["bleu", "exact_match"], references=refs, hypotheses=hyps)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score / 100)
    assert got["exact_match"] == pytest.approx(1 / 3)
    spaced = compute_metrics(["exact_match"], references=["a  b"], hypotheses=[" a b "])
    assert spaced["exact_match"] == 1.0  # whitespace-insensitive


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ConfigError, match="known metrics: .*accuracy.*mrr"):
        compute_metrics(["acc"], y_true=[0], y_pred=[0])


def test_binary_metric_on_multiclass_labels_is_refused():
    with pytest.raises(ConfigError, match="macro_f1"):
        compute_metrics(["f1"], y_true=[0, 1, 2], y_pred=[0, 1, 2])


def test_missing_inputs_are_named():
    with pytest.raises(Exception, match="ranks"):
        compute_metrics(["mrr"], y_true=[0], y_pred=[0])


def test_every_metric_is_higher_is_better():
    assert {metric_direction(name) for name in METRICS} == {"higher"}


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_vectorised_resamples_equal_scikit_learn_on_each_resample(kind):
    data = _binary(300, 0.7, seed=1) if kind == "binary" else _multiclass(300, seed=1)
    names = CLASSIFICATION if kind == "binary" else ["accuracy", "mcc", "macro_f1"]
    weights = resample_weights(300, 8, seed=3)
    for name in names:
        batched = METRICS[name].batched(weights, data)
        for b, counts in enumerate(weights.astype(int)):
            resample = {key: np.repeat(values, counts) for key, values in data.items()}
            assert batched[b] == pytest.approx(compute_metrics([name], **resample)[name]), (name, b)


def test_vectorised_bleu_equals_sacrebleu_on_a_resample():
    refs = [f"x{i} y z w v" for i in range(40)]
    hyps = [f"x{i} y z q v" if i % 3 else f"x{i} y z w v" for i in range(40)]
    weights = resample_weights(40, 3, seed=0)
    batched = METRICS["bleu"].batched(weights, {"references": refs, "hypotheses": hyps})
    for b, counts in enumerate(weights.astype(int)):
        picked = [i for i, c in enumerate(counts) for _ in range(c)]
        expected = sacrebleu.corpus_bleu([hyps[i] for i in picked], [[refs[i] for i in picked]]).score / 100
        assert batched[b] == pytest.approx(expected)


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_data():
    small, large = _binary(100, 0.7), _binary(2000, 0.7)
    ci_small = bootstrap_ci(["accuracy", "f1", "mcc"], small)
    ci_large = bootstrap_ci(["accuracy", "f1", "mcc"], large)
    point = compute_metrics(["accuracy", "f1", "mcc"], **small)
    for name, (low, high) in ci_small.items():
        assert low <= point[name] <= high
        assert (ci_large[name][1] - ci_large[name][0]) < (high - low) / 2  # ~ 1/sqrt(20) as wide


def test_bootstrap_ci_for_ranks_and_text():
    ranks = np.random.default_rng(0).integers(1, 20, 500)
    (low, high) = bootstrap_ci(["mrr"], {"ranks": ranks})["mrr"]
    assert low < np.mean(1 / ranks) < high
    refs = [f"a{i} b c d" for i in range(50)]
    hyps = [r if i % 2 else r.replace("c", "e") for i, r in enumerate(refs)]
    ci = bootstrap_ci(["bleu", "exact_match"], {"references": refs, "hypotheses": hyps})
    assert ci["exact_match"][0] < 0.5 < ci["exact_match"][1]
    assert 0 < ci["bleu"][0] < ci["bleu"][1] < 1


def test_bootstrap_is_seeded():
    data = _binary(300, 0.7)
    assert bootstrap_ci(["f1"], data, seed=5) == bootstrap_ci(["f1"], data, seed=5)


def test_paired_bootstrap_separates_a_better_system_and_not_a_copy():
    y_true = _binary(1500, 0.0)["y_true"]
    rng = np.random.default_rng(1)
    good = np.where(rng.random(1500) < 0.80, y_true, 1 - y_true)
    worse = np.where(rng.random(1500) < 0.72, y_true, 1 - y_true)
    system_good, system_worse = {"y_true": y_true, "y_pred": good}, {"y_true": y_true, "y_pred": worse}
    diff, low, high = paired_bootstrap_diff("accuracy", system_good, system_worse)
    assert diff == pytest.approx(np.mean(good == y_true) - np.mean(worse == y_true))
    assert 0 < low < diff < high
    same = paired_bootstrap_diff("f1", system_good, system_good)
    assert same == (0.0, 0.0, 0.0)


def test_paired_bootstrap_is_narrower_than_unpaired_for_correlated_systems():
    # Two systems that mostly agree: pairing cancels the shared example difficulty.
    y_true = _binary(1000, 0.0)["y_true"]
    rng = np.random.default_rng(2)
    a = np.where(rng.random(1000) < 0.75, y_true, 1 - y_true)
    b = np.where(rng.random(1000) < 0.05, 1 - a, a)
    system_a, system_b = {"y_true": y_true, "y_pred": a}, {"y_true": y_true, "y_pred": b}
    _, low, high = paired_bootstrap_diff("accuracy", system_a, system_b)
    widths = [hi - lo for lo, hi in (bootstrap_ci(["accuracy"], s)["accuracy"] for s in (system_a, system_b))]
    unpaired_width = float(np.hypot(*widths))  # width of the difference of two independent estimates
    assert high - low < unpaired_width / 2


def test_bootstrap_of_1500_examples_takes_well_under_two_seconds():
    data = _binary(1500, 0.7)
    start = time.perf_counter()
    bootstrap_ci(CLASSIFICATION, data, n=1000)
    assert time.perf_counter() - start < 2.0
