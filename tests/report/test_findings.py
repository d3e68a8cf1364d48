"""The findings section: each claim's verdict follows its stated rule from the numbers shown."""

from __future__ import annotations

import pytest

from mtpeft.report.findings import HELD, INCONCLUSIVE, NOT_HELD, NOT_MEASURED, _verdict, findings
from mtpeft.store import RunStore
from mtpeft.study.analysis import Comparison, analyse
from mtpeft.study.records import Arm
from mtpeft.study.stats import Estimate
from mtpeft.study.synthetic import record_scores

ARM = Arm("minilm", "lora", "lora")


def _comparison(task: str, mean: float, lo: float | None, hi: float | None) -> Comparison:
    e = Estimate(0.5)
    return Comparison(ARM, task, "accuracy", e, e, Estimate(mean, lo, hi, 1, "test"))


@pytest.mark.parametrize(
    ("intervals", "verdict"),
    [
        ([(-0.01, 0.03), (-0.015, 0.0)], HELD),  # every interval above -0.02: matches
        ([(-0.01, 0.03), (-0.10, -0.03)], NOT_HELD),  # one wholly below -0.02: worse
        ([(-0.01, 0.03), (-0.08, 0.04)], INCONCLUSIVE),  # one straddles -0.02
        ([(None, None)], INCONCLUSIVE),  # no interval: never called held
    ],
)
def test_task_claims_follow_the_tolerance_rule(intervals, verdict):
    comparisons = [
        _comparison(f"t{i}", 0.0 if lo is None else (lo + hi) / 2, lo, hi)
        for i, (lo, hi) in enumerate(intervals)
    ]
    assert _verdict(comparisons)[0] == verdict


def test_findings_from_a_store_name_the_numbers_and_what_was_not_measured(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    a, b = "py-defect", "py-clone"
    cost = {"shared_params": 1000.0}
    for seed in (0, 1, 2):
        record_scores(store, {a: 0.80 + seed / 100}, seed=seed, cost=cost)
        record_scores(store, {b: 0.70 + seed / 100}, seed=seed, cost=cost)
        record_scores(store, {a: 0.60 + seed / 100, b: 0.71 + seed / 100}, seed=seed, cost=cost)
    by_claim = {f.claim[:3]: f for f in findings(analyse(store.list_runs()))}
    # (b): py-defect drops by 0.20 in every seed (t interval far below -0.02) -> not held.
    assert by_claim["(b)"].verdict == NOT_HELD and "py-defect -0.200" in by_claim["(b)"].evidence
    assert by_claim["(a)"].verdict == NOT_MEASURED  # no full fine-tuning run
    assert by_claim["(c)"].verdict.startswith(f"parameters {HELD}")  # 2 x 1000 vs 1000: divided by 2
    assert by_claim["(e)"].verdict == NOT_MEASURED and "mtpeft prompt" in by_claim["(e)"].evidence
