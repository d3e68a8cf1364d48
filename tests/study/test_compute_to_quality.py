"""Compute to reach quality, on hand-made curves: the ratio a reader sees beside the study's 85%."""

from __future__ import annotations

import pytest

from mtpeft.report.compute import verdict_sentence
from mtpeft.store import RunStore
from mtpeft.study.analysis import analyse
from mtpeft.study.compute_to_quality import budget_points, compute_to_quality
from mtpeft.study.records import StudyRuns
from mtpeft.study.synthetic import record_scores

A, B = "py-defect", "py-clone"  # primary metrics: accuracy, f1


def _curve(*points: tuple[int, float, dict[str, float]], test: bool = False) -> dict:
    """{"curve": [...]} from (step, FLOPs so far, {task: valid primary score}) points."""
    metric = {A: "accuracy", B: "f1"}
    curve = []
    for step, flops, scores in points:
        metrics = {t: {metric[t]: v} for t, v in scores.items()}
        entry = {
            "step": step,
            "metrics": metrics,
            "compute": {"train_flops_estimate": flops, "tokens": flops / 10},
        }
        curve.append(entry | ({"test": metrics} if test else {}))
    return {"curve": curve}


def _study(store: RunStore, shared_points, *, seed: int = 0) -> None:
    # Each single run is best at its last validation (step 100, 1e12 FLOPs): 0.80 and 0.70.
    record_scores(store, {A: 0.8}, seed=seed, details=_curve((50, 5e11, {A: 0.70}), (100, 1e12, {A: 0.80})))
    record_scores(store, {B: 0.7}, seed=seed, details=_curve((50, 5e11, {B: 0.65}), (100, 1e12, {B: 0.70})))
    record_scores(store, {A: 0.8, B: 0.7}, seed=seed, details=_curve(*shared_points))


def test_a_shared_run_reaching_both_targets_halfway_costs_a_quarter(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    # At step 50 (1e12 FLOPs: two tasks per step) both tasks are within 0.01 of their single-task best.
    _study(store, [(50, 1e12, {A: 0.795, B: 0.695}), (100, 2e12, {A: 0.81, B: 0.70})])
    (result,) = compute_to_quality(StudyRuns(store.list_runs()))
    (seed,) = result.seeds
    assert seed.targets == pytest.approx({A: 0.79, B: 0.69})
    assert seed.shared_step == 50 and seed.ratio("train_flops_estimate") == pytest.approx(0.5)
    assert "shared / single compute to reach quality 0.50" in verdict_sentence(result)
    assert "a saving of 50%" in verdict_sentence(result)


def test_a_task_the_shared_run_never_brings_to_single_quality_has_no_ratio(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    _study(store, [(50, 1e12, {A: 0.70, B: 0.69}), (100, 2e12, {A: 0.75, B: 0.71})])
    (result,) = compute_to_quality(StudyRuns(store.list_runs()))
    assert result.seeds[0].missed == [A] and result.seeds[0].ratio("train_flops_estimate") is None
    assert result.estimate().mean is None
    assert "never reached single-task quality on py-defect" in verdict_sentence(result)


def test_over_seeds_the_ratio_gets_an_interval_and_the_85_percent_is_judged(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    for seed, flops in enumerate((1e11, 2e11, 3e11)):  # ratios 0.05, 0.10, 0.15
        _study(store, [(10, flops, {A: 0.80, B: 0.70}), (100, 2e12, {A: 0.80, B: 0.70})], seed=seed)
    (result,) = compute_to_quality(StudyRuns(store.list_runs()))
    estimate = result.estimate()
    assert estimate.mean == pytest.approx(0.10) and estimate.has_ci and estimate.n_seeds == 3
    assert "That meets the study's 85%." in verdict_sentence(result)


def test_runs_without_curves_give_no_ratio_and_the_report_says_why(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    for scores in ({A: 0.8}, {B: 0.7}, {A: 0.8, B: 0.7}):
        record_scores(store, scores)
    analysis = analyse(store.list_runs())
    assert analysis.compute_to_quality == []


def test_budget_points_average_the_seeds_at_shared_steps(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    for seed, score in enumerate((0.6, 0.8)):
        details = _curve((50, 1e12, {A: score, B: 0.5}), (100, 2e12, {A: score + 0.1, B: 0.6}), test=True)
        record_scores(store, {A: score, B: 0.5}, seed=seed, details=details)
    points = budget_points(store.list_runs(), {A: "accuracy", B: "f1"})
    assert [p["step"] for p in points] == [50, 100] and points[0]["seeds"] == 2
    assert points[0]["valid"][A] == pytest.approx(0.7) and points[1]["test"][A] == pytest.approx(0.8)
    assert points[1]["compute"]["train_flops_estimate"] == pytest.approx(2e12)


def test_looser_tolerances_reach_what_the_strict_one_misses(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    # py-defect ends 0.03 under its single-task best: missed at 0.01 and 0.02, reached at 0.05.
    _study(store, [(50, 1e12, {A: 0.77, B: 0.70}), (100, 2e12, {A: 0.77, B: 0.70})])
    analysis = analyse(store.list_runs())
    assert analysis.compute_to_quality[0].reached == 0
    by_tolerance = {r.tolerance: r for r in analysis.compute_to_quality_looser}
    assert by_tolerance[0.02].reached == 0 and by_tolerance[0.05].reached == 1
    # Within 0.05 the py-clone single run gets there at step 50 (5e11), py-defect at 100: 1e12 / 1.5e12.
    assert by_tolerance[0.05].estimate().mean == pytest.approx(2 / 3)
