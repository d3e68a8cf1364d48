"""The gradient-conflict section on hand-made stores: the cosines, verdicts and correlation a reader sees."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats

from mtpeft.report.build import Context, Section, Table
from mtpeft.report.conflict import conflict_section
from mtpeft.store import RunStore
from mtpeft.study.analysis import analyse
from mtpeft.study.synthetic import record_scores
from mtpeft.training.grad_conflict import pair_key

A, B, C = "py-defect", "py-clone", "py-search"  # study order; stored pair keys sort them alphabetically


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "mtpeft.sqlite")


def _conflict(**pairs: tuple[float, int]) -> dict:
    """details["grad_conflict"] as a run stores it: {pair: (mean cosine, measurements)}."""
    return {
        "grad_conflict": {
            "every": 1,
            "measurements": max(n for _, n in pairs.values()),
            "pairs": {key: {"mean": m, "n": n, "verdict": "unused"} for key, (m, n) in pairs.items()},
            "grad_norm": {},
        }
    }


def _section(store: RunStore, details: dict[str, dict], tmp_path: Path) -> Section | None:
    records = [replace(r, details=details.get(r.run_id, {})) for r in store.list_runs()]
    return conflict_section(analyse(records), Context(store=tmp_path, generated="now"))


def _table(section: Section) -> Table:
    (table,) = [b for b in section.blocks if isinstance(b, Table)]
    return table


def _row(table: Table, a: str, b: str) -> dict[str, str]:
    (row,) = [r for r in table.rows if r[:2] == [a, b]]
    return dict(zip(table.columns, row, strict=True))


def _correlation(section: Section) -> str:
    (line,) = [b for b in section.blocks if isinstance(b, str) and "Spearman" in b]
    return line


def _transfer_store(store: RunStore) -> dict[str, str]:
    """Three singles and three pair runs (transfers by hand below); returns the pair runs' ids."""
    for scores in ({A: 0.70}, {B: 0.80}, {C: 0.50}):
        record_scores(store, scores)
    return {
        "AB": record_scores(store, {A: 0.75, B: 0.81}),  # T[A][B] = +0.05, T[B][A] = +0.01: mean +0.03
        "AC": record_scores(store, {A: 0.68, C: 0.56}),  # -0.02, +0.06: mean +0.02
        "BC": record_scores(store, {B: 0.79, C: 0.47}),  # -0.01, -0.03: mean -0.02
    }


def test_section_is_absent_without_measurements(store, tmp_path):
    _transfer_store(store)
    record_scores(store, {A: 0.72, B: 0.80, C: 0.49})
    assert _section(store, {}, tmp_path) is None


def test_cosine_is_averaged_over_seeds_and_over_every_run_holding_the_pair(store, tmp_path):
    for scores in ({A: 0.70}, {B: 0.80}):
        record_scores(store, scores)
    seed0 = record_scores(store, {A: 0.75, B: 0.81}, seed=0)
    seed1 = record_scores(store, {A: 0.75, B: 0.81}, seed=1)
    everything = record_scores(store, {A: 0.72, B: 0.80, C: 0.49})
    details = {
        seed0: _conflict(**{pair_key(A, B): (0.2, 10)}),
        seed1: _conflict(**{pair_key(A, B): (0.4, 5)}),
        everything: _conflict(**{pair_key(A, B): (-0.3, 4), pair_key(A, C): (0.5, 4)}),
    }
    section = _section(store, details, tmp_path)
    table = _table(section)
    row = _row(table, A, B)  # in the study's order, though the stored key is "py-clone | py-defect"
    assert row["mean cosine"] == "+0.100"  # (0.2 + 0.4 - 0.3) / 3: each run weighs the same
    assert (row["runs"], row["measurements"]) == ("3", "19")
    assert (row["T[a][b]"], row["T[b][a]"], row["mean transfer"]) == ("+0.050", "+0.010", "+0.030")
    assert _row(table, A, C)["mean transfer"] == "-"  # the pair was never run alone
    assert f"{A} + {B} (seeds 0, 1)" in table.caption and f"{A} + {B} + {C} (seed 0)" in table.caption


@pytest.mark.parametrize(
    ("cosine", "verdict"),
    [(-0.051, "conflicting"), (-0.05, "neutral"), (0.0, "neutral"), (0.05, "neutral"), (0.051, "aligned")],
)
def test_verdict_follows_the_studys_thresholds(store, tmp_path, cosine, verdict):
    run = record_scores(store, {A: 0.75, B: 0.81})
    section = _section(store, {run: _conflict(**{pair_key(A, B): (cosine, 3)})}, tmp_path)
    assert _row(_table(section), A, B)["verdict"] == verdict


def test_spearman_correlation_matches_scipy(store, tmp_path):
    pairs = _transfer_store(store)
    cosines = {"AB": 0.3, "AC": -0.1, "BC": 0.1}
    keys = {"AB": pair_key(A, B), "AC": pair_key(A, C), "BC": pair_key(B, C)}
    details = {pairs[p]: _conflict(**{keys[p]: (cosines[p], 8)}) for p in pairs}
    section = _section(store, details, tmp_path)
    rho = stats.spearmanr([0.3, -0.1, 0.1], [0.03, 0.02, -0.02]).statistic  # the mean transfers above
    assert f"{rho:+.3f} over 3 pairs" in _correlation(section)
    assert "positive means the cheap signal" in _table(section).caption


def test_fewer_than_three_pairs_are_not_correlated(store, tmp_path):
    pairs = _transfer_store(store)
    details = {pairs["AB"]: _conflict(**{pair_key(A, B): (0.3, 8)})}
    details |= {pairs["AC"]: _conflict(**{pair_key(A, C): (-0.1, 8)})}
    line = _correlation(_section(store, details, tmp_path))
    assert "too few pairs to correlate" in line and "2 with both" in line
