"""Calibration arithmetic: temperature scaling, ECE and precision thresholds on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from mtpeft.evaluation import calibration as cal


def test_ece_of_a_hand_made_example():
    probs = np.array([[0.9, 0.1], [0.08, 0.92], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 1])  # right, wrong (both in bin (0.867, 0.933]), right, wrong
    # 2/4 * |0.5 - 0.91| + 1/4 * |1 - 0.7| + 1/4 * |0 - 0.55|
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.4175)
    filled = [b for b in cal.reliability_bins(probs, labels) if b.count]
    assert [(b.count, b.accuracy) for b in filled] == [(1, 0.0), (1, 1.0), (2, 0.5)]
    assert filled[2].confidence == pytest.approx(0.91)
    assert len(cal.reliability_bins(probs, labels)) == cal.ECE_BINS == 15


def test_perfectly_calibrated_bins_have_no_error():
    probs = np.array([[0.75, 0.25]] * 4)
    assert cal.expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)


def _overconfident(n: int = 4000, true_t: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits 3x too sharp: labels drawn from softmax(z), the model reports 3 z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) * 1.5
    p = cal.scaled_probabilities(z)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return z * true_t, labels


def test_temperature_lowers_nll_recovers_the_true_scale_and_keeps_labels():
    logits, labels = _overconfident()
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert cal.nll(logits, labels, t) < cal.nll(logits, labels) - 0.1
    before, after = cal.scaled_probabilities(logits), cal.scaled_probabilities(logits, t)
    assert (before.argmax(-1) == after.argmax(-1)).all()
    assert cal.expected_calibration_error(after, labels) < cal.expected_calibration_error(before, labels) / 2


def test_temperature_never_raises_nll_on_its_split():
    rng = np.random.default_rng(1)
    for _ in range(20):
        logits, labels = rng.normal(size=(7, 2)), rng.integers(0, 2, size=7)
        assert cal.nll(logits, labels, cal.fit_temperature(logits, labels)) <= cal.nll(logits, labels)


def test_separable_split_stops_at_the_bound():
    logits = np.array([[2.0, -2.0], [-1.0, 1.0]])  # both right: the NLL falls forever as T -> 0
    # At T near 0.05 the NLL is about exp(-40): flat to the search, which stops close to the bound.
    assert cal.T_MIN <= cal.fit_temperature(logits, np.array([0, 1])) < 0.06


def test_precision_threshold_is_the_smallest_that_reaches_the_target():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    truth = np.array([0, 1, 0, 1, 1, 1])
    # >= 0.2: 4 of 5 positive (0.8); >= 0.3: 3 of 4 (0.75); >= 0.4: 3 of 3 (1.0, recall 3/4)
    at_08 = cal.precision_threshold(scores, truth, 0.8)
    assert (at_08.threshold, at_08.precision, at_08.recall, at_08.flagged) == (0.2, 0.8, 1.0, 5)
    at_09 = cal.precision_threshold(scores, truth, 0.9)
    assert (at_09.threshold, at_09.precision, at_09.recall) == (0.4, 1.0, 0.75)
    # 3 of 3 flagged are right: the exact lower bound p solves p**3 = 0.025
    assert at_09.precision_low == pytest.approx(0.025 ** (1 / 3))


def test_precision_is_reached_on_the_split_it_was_chosen_on():
    rng = np.random.default_rng(2)
    truth = rng.random(500) < 0.3
    scores = np.clip(truth * 0.3 + rng.random(500) * 0.7, 0, 1)
    for target in (0.5, 0.7, 0.9):
        choice = cal.precision_threshold(scores, truth, target)
        flagged = scores >= choice.threshold
        assert truth[flagged].mean() >= target
        assert choice.recall == pytest.approx(truth[flagged].sum() / truth.sum())


def test_unreachable_precision_says_the_best_reachable():
    with pytest.raises(cal.TargetUnreachable) as raised:
        cal.precision_threshold(np.array([0.1, 0.9]), np.array([1, 0]), 0.6)
    assert raised.value.best == pytest.approx(0.5)
    with pytest.raises(cal.TargetUnreachable):  # no positive example at all
        cal.precision_threshold(np.array([0.1, 0.9]), np.array([0, 0]), 0.5)


@pytest.mark.parametrize(("hits", "count"), [(0, 5), (3, 5), (5, 5), (18, 20), (1, 1), (230, 400)])
def test_clopper_pearson_is_the_exact_interval_from_the_beta_quantiles(hits, count):
    from scipy.stats import beta

    low = beta.ppf(0.025, hits, count - hits + 1) if hits else 0.0  # Clopper & Pearson 1934
    high = beta.ppf(0.975, hits + 1, count - hits) if hits < count else 1.0
    assert cal.clopper_pearson(hits, count) == pytest.approx((low, high), abs=1e-12)
    with pytest.raises(ValueError, match="no trials"):
        cal.clopper_pearson(0, 0)
