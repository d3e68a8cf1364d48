"""Analyses on hand-made stores: the numbers a reader will see, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mtpeft.store import RunStore
from mtpeft.study.analysis import analyse
from mtpeft.study.synthetic import record_scores

A, B, C = "py-defect", "py-clone", "py-search"  # primary metrics: accuracy, f1, mrr


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "mtpeft.sqlite")


def _transfer_store(store: RunStore) -> None:
    for scores in ({A: 0.70}, {B: 0.80}, {C: 0.50}):
        record_scores(store, scores)
    record_scores(store, {A: 0.75, B: 0.81})  # A gains 0.05 from B, B gains 0.01 from A
    record_scores(store, {A: 0.68, C: 0.56})  # A loses 0.02, C gains 0.06
    record_scores(store, {B: 0.79, C: 0.47})  # B loses 0.01, C loses 0.03
    record_scores(store, {A: 0.72, B: 0.80, C: 0.49})


def test_transfer_matrix_and_asymmetry_by_hand(store):
    _transfer_store(store)
    analysis = analyse(store.list_runs())
    (matrix,) = analysis.transfer.values()
    assert matrix.tasks == [A, B, C]
    expected = np.array([[np.nan, 0.05, -0.02], [0.01, np.nan, -0.01], [0.06, -0.03, np.nan]])
    np.testing.assert_allclose(matrix.values, expected, atol=1e-12)
    np.testing.assert_allclose(matrix.asymmetry[0, 1], 0.04, atol=1e-12)  # B helps A more than A helps B
    np.testing.assert_allclose(matrix.asymmetry[2, 0], 0.08, atol=1e-12)  # the A+C pair favours C
    assert np.isnan(matrix.asymmetry[1, 1])


def test_missing_pair_is_nan_not_zero(store):
    for scores in ({A: 0.70}, {B: 0.80}, {C: 0.50}, {A: 0.75, B: 0.81}):
        record_scores(store, scores)
    (matrix,) = analyse(store.list_runs()).transfer.values()
    assert matrix.values[0, 1] == pytest.approx(0.05)
    assert np.isnan(matrix.values[0, 2]) and np.isnan(matrix.values[2, 1])


def test_single_vs_multi_over_three_seeds_uses_a_t_interval(store):
    singles, multis = [0.70, 0.72, 0.74], [0.73, 0.76, 0.74]
    for seed, (s, m) in enumerate(zip(singles, multis, strict=True)):
        record_scores(store, {A: s}, seed=seed)
        record_scores(store, {B: 0.8}, seed=seed)
        record_scores(store, {A: m, B: 0.8}, seed=seed)
    comparison = next(c for c in analyse(store.list_runs()).single_vs_multi if c.task == A)
    diffs = np.array(multis) - np.array(singles)
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert comparison.metric == "accuracy"
    assert comparison.diff.mean == pytest.approx(diffs.mean())
    assert (comparison.diff.lo, comparison.diff.hi) == pytest.approx(
        (diffs.mean() - half, diffs.mean() + half)
    )
    assert comparison.diff.ci == "t over 3 paired seeds"


def _per_example(run_dir: Path, task: str, y_true: list[int], y_pred: list[int]) -> None:
    out = run_dir / "predictions" / "test"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task}.per_example.json").write_text(json.dumps({"y_true": y_true, "y_pred": y_pred}))


def test_one_seed_with_per_example_files_gets_a_paired_bootstrap(store, tmp_path):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 300).tolist()
    single_pred = [t if rng.random() < 0.6 else 1 - t for t in y_true]
    multi_pred = [t if rng.random() < 0.9 else 1 - t for t in y_true]
    acc = lambda pred: float(np.mean(np.array(pred) == np.array(y_true)))  # noqa: E731
    for name, pred, tasks in (
        ("s", single_pred, {A: acc(single_pred)}),
        ("m", multi_pred, {A: acc(multi_pred), B: 0.8}),
    ):
        _per_example(tmp_path / name, A, y_true, pred)
        record_scores(store, tasks, run_dir=tmp_path / name)
    record_scores(store, {B: 0.8})
    comparison = next(c for c in analyse(store.list_runs()).single_vs_multi if c.task == A)
    assert comparison.diff.ci == "paired bootstrap over 300 test examples"
    assert comparison.diff.lo < comparison.diff.mean < comparison.diff.hi
    assert comparison.diff.lo > 0  # a 30-point gain on 300 examples is clearly positive


def test_no_interval_when_runs_scored_different_examples(store, tmp_path):
    _per_example(tmp_path / "s", A, [0, 1, 0, 1], [0, 1, 1, 1])
    _per_example(tmp_path / "m", A, [1, 1, 0, 0], [1, 1, 0, 0])
    record_scores(store, {A: 0.75}, run_dir=tmp_path / "s")
    record_scores(store, {A: 1.0, B: 0.8}, run_dir=tmp_path / "m")
    record_scores(store, {B: 0.8})
    comparison = next(c for c in analyse(store.list_runs()).single_vs_multi if c.task == A)
    assert comparison.diff.mean == pytest.approx(0.25) and not comparison.diff.has_ci
    assert comparison.diff.ci == "none: the runs scored different test examples"


def test_no_interval_without_seeds_or_predictions_and_it_says_so(store):
    record_scores(store, {A: 0.7})
    record_scores(store, {B: 0.8})
    record_scores(store, {A: 0.75, B: 0.8})
    comparison = analyse(store.list_runs()).single_vs_multi[0]
    assert not comparison.diff.has_ci and "no per-example predictions" in comparison.diff.ci


def test_peft_vs_full_compares_multi_task_runs_of_the_same_model(store):
    record_scores(store, {A: 0.74, B: 0.82}, method="lora")
    record_scores(store, {A: 0.70, B: 0.85}, method="full")
    record_scores(store, {A: 0.60, B: 0.60}, method="lora", model="other-model")
    comparisons = analyse(store.list_runs()).peft_vs_full
    assert {(c.arm.model, c.arm.method, c.task): round(c.diff.mean, 6) for c in comparisons} == {
        ("minilm", "lora", A): 0.04,
        ("minilm", "lora", B): -0.03,
    }


def test_stability_is_the_std_over_seeds_and_the_range_over_groupings(store):
    for seed, value in enumerate([0.70, 0.74, 0.78]):
        record_scores(store, {A: value}, seed=seed)
    record_scores(store, {A: 0.65, B: 0.8})
    record_scores(store, {A: 0.80, C: 0.5})
    row = next(s for s in analyse(store.list_runs()).stability if s.task == A)
    assert row.n_seeds == 3 and row.std == pytest.approx(0.04)
    assert (row.grouped_min, row.grouped_max, row.groups) == (0.65, 0.80, 2)


def test_cost_compares_the_sum_of_single_runs_with_one_multi_run(store):
    cost = lambda flops, wall, shared: {  # noqa: E731
        "train_flops_estimate": flops,
        "wall_time_s": wall,
        "shared_params": shared,
        "trainable_params": shared + 10,
        "head_params": 10,
    }
    record_scores(store, {A: 0.7}, cost=cost(1e12, 100, 1000))
    record_scores(store, {B: 0.8}, cost=cost(3e12, 300, 1000))
    record_scores(store, {A: 0.7, B: 0.8}, cost=cost(2e12, 150, 1000))
    (comparison,) = analyse(store.list_runs()).costs
    assert comparison.single["train_flops_estimate"] == 4e12 and comparison.multi["wall_time_s"] == 150
    assert comparison.ratio("train_flops_estimate") == pytest.approx(0.5)
    assert comparison.ratio("shared_params") == pytest.approx(0.5)  # one module instead of two


def test_unfinished_runs_are_left_out_of_every_number(store):
    record_scores(store, {A: 0.7})
    record_scores(store, {B: 0.8})
    record_scores(store, {A: 0.75, B: 0.8})
    failed = record_scores(store, {A: 0.1, B: 0.1}, seed=1)
    store.fail_run(failed, "boom")
    analysis = analyse(store.list_runs())
    assert analysis.single_vs_multi[0].left.mean == pytest.approx(0.75)
    assert len(analysis.runs.records) == 4 and len(analysis.runs.finished) == 3
