"""mtpeft.evaluation.ood on synthetic vectors: thresholds keep the chosen share of validation inside,
far vectors score beyond them with every score, and the statistics survive a write and a read."""

from __future__ import annotations

import numpy as np
import pytest

from mtpeft.evaluation.ood import MAHALANOBIS_MAX_HIDDEN, SCORES, fit_ood, read_ood, write_ood


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    train, valid = rng.normal(size=(400, 16)) + 3.0, rng.normal(size=(400, 16)) + 3.0
    return fit_ood(train, valid, limit=40, task=None), valid, rng


def test_threshold_keeps_the_share_of_validation_inside(stats):
    fitted, valid, _ = stats
    for score in SCORES:
        inside = np.mean(fitted.scores(valid, score) <= fitted.thresholds[score])
        assert inside == pytest.approx(0.95, abs=0.01)
    assert fitted.unfamiliar(fitted.scores(valid)).mean() == pytest.approx(0.05, abs=0.01)


def test_vectors_from_elsewhere_score_beyond_every_threshold(stats):
    fitted, _, rng = stats
    elsewhere = rng.normal(size=(50, 16)) * 3.0 - 3.0
    for score in SCORES:
        assert (fitted.scores(elsewhere, score) > fitted.thresholds[score]).all(), score


def test_written_statistics_read_back_the_same(stats, tmp_path):
    fitted, valid, _ = stats
    write_ood(tmp_path, fitted)
    again = read_ood(tmp_path)
    assert again is not None and again.thresholds == fitted.thresholds and again.limit == 40
    np.testing.assert_allclose(again.scores(valid), fitted.scores(valid), rtol=1e-5)
    assert read_ood(tmp_path / "nothing") is None


def test_a_wide_model_stores_no_precision_matrix(tmp_path):
    rng = np.random.default_rng(1)
    wide = fit_ood(
        rng.normal(size=(30, MAHALANOBIS_MAX_HIDDEN + 1)), rng.normal(size=(10, 1025)), limit=8, task=None
    )
    assert set(wide.thresholds) == {"knn"} and "precision" not in wide.arrays
    with pytest.raises(KeyError, match="was not fitted"):
        wide.scores(rng.normal(size=(2, 1025)), "mahalanobis")
    write_ood(tmp_path, wide)
    assert read_ood(tmp_path).thresholds == wide.thresholds
