"""Grouping recommendation: the partition a reader would pick by hand, and its compute."""

from __future__ import annotations

import pytest

from mtpeft.study.grouping import Cost, propose, recommend, set_partitions


@pytest.mark.parametrize(("n", "bell"), [(1, 1), (2, 2), (3, 5), (4, 15), (5, 52), (8, 4140)])
def test_set_partitions_enumerates_each_partition_once(n, bell):
    items = [f"t{i}" for i in range(n)]
    seen = {frozenset(frozenset(g) for g in p) for p in set_partitions(items)}
    assert len(seen) == bell
    assert all(sorted(x for group in p for x in group) == items for p in seen)  # every task exactly once


def _friends_and_a_loner() -> tuple[list[str], dict[str, float], dict[tuple[str, str], float]]:
    tasks = ["a", "b", "c", "loner"]
    single = {t: 0.5 for t in tasks}
    transfer = {(i, j): 0.05 for i in "abc" for j in "abc" if i != j}  # a, b, c help each other
    for t in "abc":
        transfer[(t, "loner")] = -0.10  # the loner hurts everyone ...
        transfer[("loner", t)] = -0.10  # ... and is hurt by everyone
    return tasks, single, transfer


def test_obvious_clusters_are_recommended():
    tasks, single, transfer = _friends_and_a_loner()
    rec = recommend(tasks, single, transfer)
    assert sorted(sorted(g.tasks) for g in rec.best.groups) == [["a", "b", "c"], ["loner"]]
    assert rec.best.mean_score == pytest.approx((3 * 0.55 + 0.5) / 4)
    assert rec.partitions == 15 and "exhaustive" in rec.search
    assert {g.source for g in rec.best.groups} == {"estimated", "single"}
    assert rec.notes  # estimated groups: the report tells the reader to confirm them


def test_a_measured_group_beats_its_estimate():
    tasks, single, transfer = _friends_and_a_loner()
    # a+b+c was run and did badly (transfers do not add up here): the measurement wins.
    measured = {frozenset("abc"): {"a": 0.40, "b": 0.40, "c": 0.40}}
    rec = recommend(tasks, single, transfer, measured)
    groups = sorted(sorted(g.tasks) for g in rec.best.groups)
    assert ["a", "b", "c"] not in groups
    assert max(len(g) for g in groups) == 2  # pairs of friends, estimated from their transfer


def test_no_transfer_anywhere_prefers_one_shared_module():
    tasks = ["a", "b", "c"]
    rec = recommend(tasks, {t: 0.6 for t in tasks}, {(i, j): 0.0 for i in tasks for j in tasks if i != j})
    assert rec.best.modules == 1  # equal scores: fewer modules to store


def test_all_negative_transfer_keeps_tasks_apart():
    tasks = ["a", "b", "c"]
    rec = recommend(tasks, {t: 0.6 for t in tasks}, {(i, j): -0.01 for i in tasks for j in tasks if i != j})
    assert rec.best.modules == 3


def test_compute_relative_to_both_extremes():
    tasks, single, transfer = _friends_and_a_loner()
    costs = {frozenset([t]): Cost(flops=1e12, wall_s=100.0) for t in tasks}
    costs[frozenset(tasks)] = Cost(flops=3e12, wall_s=250.0)  # the measured all-in-one run
    rec = recommend(tasks, single, transfer, costs=costs)
    assert rec.best.total("flops") == pytest.approx(4e12)  # a+b+c estimated from single runs, + loner
    assert rec.relative("flops", rec.all_single) == pytest.approx(1.0)
    assert rec.relative("flops", rec.all_in_one) == pytest.approx(4 / 3)
    assert rec.all_in_one.groups[0].cost_source == "measured"


def test_many_tasks_fall_back_to_greedy_merging_and_still_find_clusters():
    clusters = [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1", "c2", "c3"]]
    tasks = [t for c in clusters for t in c]
    same = {t: k for k, c in enumerate(clusters) for t in c}
    transfer = {(i, j): (0.04 if same[i] == same[j] else -0.05) for i in tasks for j in tasks if i != j}
    rec = recommend(tasks, {t: 0.5 for t in tasks}, transfer)
    assert "greedy" in rec.search
    assert sorted(sorted(g.tasks) for g in rec.best.groups) == clusters


def test_a_task_without_a_single_score_is_an_error():
    with pytest.raises(ValueError, match="single-task score"):
        recommend(["a", "b"], {"a": 0.5}, {})


def test_tasks_never_co_trained_are_not_grouped_on_no_evidence():
    # Only single runs and the all-in-one run (which hurt c); no pairs: a+b was never measured.
    tasks = ["a", "b", "c"]
    measured = {frozenset(tasks): {"a": 0.60, "b": 0.60, "c": 0.30}}
    rec = recommend(tasks, {t: 0.6 for t in tasks}, {}, measured)
    assert rec.best.modules == 3 and {g.source for g in rec.best.groups} == {"single"}
    assert rec.all_in_one.known and rec.all_in_one.mean_score == pytest.approx(0.5)
    assert any("no measured pairwise transfer were left out" in n for n in rec.notes)
    unmeasured = recommend(tasks, {t: 0.6 for t in tasks}, {})
    assert unmeasured.best.modules == 3 and not unmeasured.all_in_one.known
    assert any("left out" in n for n in unmeasured.notes)
    paired = recommend(tasks, {t: 0.6 for t in tasks}, {(i, j): 0.0 for i in tasks for j in tasks if i != j})
    assert not any("left out" in n for n in paired.notes)


# ---- a budget of modules, and cheap signals (a task alone scores 0) ---------------------------------
def _pair_and_two_loners() -> dict[tuple[str, str], float]:
    """a and b help each other; c and d hurt everyone, each other least."""
    gains = {("a", "b"): 0.3, ("b", "a"): 0.3, ("c", "d"): -0.1, ("d", "c"): -0.1}
    for loner, harm in (("c", -0.2), ("d", -0.3)):
        for friend in "ab":
            gains[(loner, friend)] = gains[(friend, loner)] = harm
    return gains


def test_a_signal_groups_the_tasks_that_help_each_other():
    proposal = propose(list("abcd"), _pair_and_two_loners())
    assert _groups(proposal.best) == [["a", "b"], ["c"], ["d"]]
    assert proposal.best.mean_score == pytest.approx((0.3 + 0.3) / 4)  # the loners alone: 0 each
    assert "exhaustive over all 15 partitions" in proposal.search


@pytest.mark.parametrize(
    ("budget", "expected", "mean"),
    [
        # 2 modules: c and d must share one (they hurt each other least); (0.3 + 0.3 - 0.1 - 0.1) / 4.
        (2, [["a", "b"], ["c", "d"]], 0.1),
        (
            1,
            [["a", "b", "c", "d"]],
            (2 * (0.3 - 0.2 - 0.3) / 3 + (-0.2 - 0.2 - 0.1) / 3 + (-0.3 - 0.3 - 0.1) / 3) / 4,
        ),
        (3, [["a", "b"], ["c"], ["d"]], 0.15),
    ],
)
def test_the_budget_caps_the_modules_at_the_best_partition_that_fits(budget, expected, mean):
    proposal = propose(list("abcd"), _pair_and_two_loners(), max_groups=budget)
    assert _groups(proposal.best) == expected
    assert proposal.best.mean_score == pytest.approx(mean)
    assert f"at most {budget} module" in proposal.search


def test_greedy_search_keeps_to_the_budget_by_merging_whole_clusters():
    clusters = [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1", "c2", "c3"]]
    same = {t: k for k, c in enumerate(clusters) for t in c}
    tasks = [t for c in clusters for t in c]
    gains = {(i, j): (0.04 if same[i] == same[j] else -0.05) for i in tasks for j in tasks if i != j}
    free = propose(tasks, gains)
    assert "greedy" in free.search and _groups(free.best) == clusters
    capped = propose(tasks, gains, max_groups=2)
    assert capped.best.modules == 2
    for group in capped.best.groups:  # each module a union of whole clusters
        assert set(group.tasks) == {t for c in clusters if set(c) & set(group.tasks) for t in c}
    assert sorted(len(g.tasks) for g in capped.best.groups) == [3, 6]  # two clusters merged, one apart


def test_no_partition_within_the_budget_rests_on_known_pairs():
    gains = {("a", "b"): 0.1, ("b", "a"): 0.1}  # c was never measured with anyone
    assert propose(["a", "b", "c"], gains, max_groups=1).best is None
    assert _groups(propose(["a", "b", "c"], gains, max_groups=2).best) == [["a", "b"], ["c"]]


def test_recommend_takes_the_budget_too():
    tasks, single, transfer = _friends_and_a_loner()
    rec = recommend(tasks, single, transfer, max_groups=1)
    assert rec.best.modules == 1 and "at most 1 module" in rec.search


def _groups(plan) -> list[list[str]]:
    return sorted(sorted(g.tasks) for g in plan.groups)
