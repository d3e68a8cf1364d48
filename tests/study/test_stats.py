"""Spearman's rank correlation over task pairs with its bootstrap interval (study/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mtpeft.study.stats import MIN_PAIRS_FOR_INTERVAL, rank_correlation


def test_rho_and_p_are_scipys_and_the_interval_holds_rho():
    rng = np.random.default_rng(3)
    x = rng.normal(size=10)
    y = x + rng.normal(scale=0.8, size=10)  # related, noisily
    result = rank_correlation(list(x), list(y))
    expected = stats.spearmanr(x, y)
    assert (result.rho, result.p, result.n) == pytest.approx((expected.statistic, expected.pvalue, 10))
    assert -1 <= result.lo <= result.rho <= result.hi <= 1 and result.hi - result.lo > 0.05


def test_the_same_ranking_gives_a_degenerate_interval_at_one():
    result = rank_correlation([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.1, 0.3, 0.35, 0.9, 1.0, 2.0])
    assert (result.rho, result.lo, result.hi) == pytest.approx((1.0, 1.0, 1.0))


def test_too_few_pairs_give_no_interval_and_two_no_rho():
    few = rank_correlation([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert few.rho == pytest.approx(0.5) and few.lo is None and few.n < MIN_PAIRS_FOR_INTERVAL
    assert math.isnan(rank_correlation([1.0, 2.0], [2.0, 1.0]).rho)
