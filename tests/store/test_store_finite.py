"""The store records only finite metrics: a run with an inf or NaN score is never `finished`."""

from __future__ import annotations

import math
import sqlite3

import pytest

from mtpeft.errors import NonFiniteMetric
from mtpeft.store import RunStore


def _start(store: RunStore) -> str:
    return store.start_run(
        name="r", study=None, group_id=None, mode="multi", model="tiny-bert", method="lora",
        tasks=["search", "vuln"], seed=0, config={"lr": 1.0}, run_dir="/tmp/r",
    )  # fmt: skip


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_finish_run_refuses_non_finite_metrics_and_writes_nothing(tmp_path, bad):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    metrics = {"valid": {"vuln": {"accuracy": 0.5}}, "test": {"search": {"mrr": bad, "recall@1": 1.0}}}
    with pytest.raises(
        NonFiniteMetric, match=rf"non-finite metrics are not recorded \(test/search/mrr = {bad}\)"
    ):
        store.finish_run(run_id, metrics=metrics, cost={})
    record = store.get(run_id)
    assert record.status == "running" and record.metrics == {}  # one transaction: nothing half-written
    rows = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    assert rows == 0


def test_a_later_split_with_a_non_finite_metric_is_refused_too(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    store.finish_run(run_id, metrics={"test": {"vuln": {"accuracy": 0.5}}}, cost={})
    with pytest.raises(NonFiniteMetric, match="valid/vuln/accuracy = nan"):
        store.update_metrics(run_id, "valid", {"vuln": {"accuracy": math.nan}})
    with pytest.raises(NonFiniteMetric, match="valid/vuln/f1 = inf"):
        store.set_metric(run_id, "valid", "vuln", "f1", math.inf)
    assert store.get(run_id).metrics == {"test": {"vuln": {"accuracy": 0.5}}}


def test_finite_extremes_are_recorded(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    metrics = {"test": {"vuln": {"accuracy": 0.0, "mcc": -1.0}, "search": {"mrr": 1.0}}}
    store.finish_run(run_id, metrics=metrics, cost={})
    assert store.get(run_id).metrics == metrics and store.get(run_id).status == "finished"
