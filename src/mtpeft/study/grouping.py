"""Which tasks should share a module? The partition of the tasks that maximises the mean predicted score.

A task's predicted score in a group:
- measured: the mean over seeds of its score in a run of exactly that group, when there is one;
- single: its single-task score, for a group of one;
- estimated: its single-task score plus the mean transfer T[task][other] over the other tasks of the group
  (pairwise transfers assumed additive: an approximation, which the report states);
- unknown: a group neither run nor estimable (a task of it has no measured pairing with any other task
  of the group). Plans with such a group are never recommended: no evidence is not "no transfer".
The search is exhaustive over set partitions up to 8 tasks (4,140 partitions) and a greedy merge above,
optionally with a budget of at most G modules (exhaustive: only partitions that fit; greedy: once no merge
raises the mean, the best merges are still taken until it fits). Ties go to fewer modules (less storage).
Compute of a group: measured when it was run, else the sum of its tasks' single-task compute (a
multi-task step trains one micro-batch per task, as the single runs do).

A cheap signal (lookahead affinity, gradient cosine: study/signals.py) is searched the same way with
every task scoring 0 alone and, in a group, the mean signal it gets from the others (`propose`): with
affinity that is TAG's "total inter-task affinity onto each task" (Fifty et al. 2021), divided by N.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

Group = tuple[str, ...]
MAX_EXHAUSTIVE = 8
TIE = 1e-9


@dataclass(frozen=True)
class Cost:
    flops: float | None = None
    wall_s: float | None = None


@dataclass(frozen=True)
class GroupPrediction:
    tasks: Group
    scores: dict[str, float]
    source: str  # "measured" | "single" | "estimated" | "unknown"
    cost: Cost
    cost_source: str  # "measured" | "estimated" | "unknown"


@dataclass(frozen=True)
class Plan:
    """A partition of the tasks into shared modules, scored."""

    groups: list[GroupPrediction]

    @property
    def mean_score(self) -> float:
        return float(np.mean([s for g in self.groups for s in g.scores.values()]))

    @property
    def modules(self) -> int:
        return len(self.groups)

    @property
    def known(self) -> bool:
        """Every group's scores rest on measurements (not on missing pairings)."""
        return all(g.source != "unknown" for g in self.groups)

    def total(self, attr: str) -> float | None:
        values = [getattr(g.cost, attr) for g in self.groups]
        return None if any(v is None for v in values) else float(sum(values))


@dataclass(frozen=True)
class Recommendation:
    best: Plan
    all_single: Plan
    all_in_one: Plan
    search: str
    partitions: int
    notes: list[str] = field(default_factory=list)

    def relative(self, attr: str, reference: Plan) -> float | None:
        mine, ref = self.best.total(attr), reference.total(attr)
        return None if mine is None or not ref else mine / ref


def set_partitions(items: list[str]) -> Iterator[list[list[str]]]:
    """Every partition of `items` into non-empty groups (hand-written: a 6-line recursion)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1 :]]


class GroupScorer:
    """Predicts scores and compute of any group from single scores, transfers and measured runs."""

    def __init__(
        self,
        tasks: list[str],
        single: dict[str, float],
        transfer: dict[tuple[str, str], float],
        measured: dict[frozenset[str], dict[str, float]] | None = None,
        costs: dict[frozenset[str], Cost] | None = None,
    ) -> None:
        self.order = {t: i for i, t in enumerate(tasks)}
        self.single, self.transfer = single, transfer
        self.measured, self.costs = measured or {}, costs or {}
        self._cache: dict[Group, GroupPrediction] = {}

    def __call__(self, group: list[str] | Group) -> GroupPrediction:
        key = tuple(sorted(group, key=self.order.__getitem__))
        if key not in self._cache:
            self._cache[key] = GroupPrediction(key, *self._scores(key), *self._cost(key))
        return self._cache[key]

    def _scores(self, group: Group) -> tuple[dict[str, float], str]:
        measured = self.measured.get(frozenset(group))
        if measured is not None and set(measured) >= set(group):
            return {t: measured[t] for t in group}, "measured"
        if len(group) == 1:
            return {group[0]: self.single[group[0]]}, "single"
        scores, source = {}, "estimated"
        for task in group:
            known = [self.transfer[(task, o)] for o in group if o != task and (task, o) in self.transfer]
            if not known:
                source = "unknown"
            scores[task] = self.single[task] + (float(np.mean(known)) if known else 0.0)
        return scores, source

    def _cost(self, group: Group) -> tuple[Cost, str]:
        if frozenset(group) in self.costs:
            return self.costs[frozenset(group)], "measured"
        parts = [self.costs.get(frozenset([t])) for t in group]
        if any(p is None for p in parts):
            return Cost(), "unknown"
        flops = [p.flops for p in parts]
        walls = [p.wall_s for p in parts]
        return (
            Cost(
                None if None in flops else float(sum(flops)),
                None if None in walls else float(sum(walls)),
            ),
            "estimated",
        )

    def plan(self, partition: list[list[str]]) -> Plan:
        return Plan([self(group) for group in partition])


def in_study_order(plan: Plan, tasks: list[str]) -> list[GroupPrediction]:
    """The plan's groups by the position of their first task in `tasks` (as a reader lists them)."""
    position = {t: i for i, t in enumerate(tasks)}
    return sorted(plan.groups, key=lambda g: min(position.get(t, len(position)) for t in g.tasks))


def _better(a: Plan, b: Plan | None) -> bool:
    if not a.known:
        return False
    if b is None:
        return True
    if a.mean_score > b.mean_score + TIE:
        return True
    return abs(a.mean_score - b.mean_score) <= TIE and a.modules < b.modules


def _exhaustive(scorer: GroupScorer, tasks: list[str], max_groups: int | None) -> tuple[Plan | None, int]:
    """None when no partition within the budget is known (only with a budget below the task count)."""
    best, count = None, 0
    for partition in set_partitions(tasks):
        if max_groups is not None and len(partition) > max_groups:
            continue
        count += 1
        plan = scorer.plan(partition)
        if _better(plan, best):
            best = plan
    return best, count


def _merges(partition: list[list[str]]) -> Iterator[list[list[str]]]:
    """Every partition made by merging two groups of `partition`."""
    for i in range(len(partition)):
        for j in range(i + 1, len(partition)):
            rest = [g for k, g in enumerate(partition) if k not in (i, j)]
            yield [*rest, partition[i] + partition[j]]


def _greedy(scorer: GroupScorer, tasks: list[str], max_groups: int | None) -> tuple[Plan | None, int]:
    """Start from one module per task; take the merge that most raises the mean; stop when none does
    and the plan fits the budget (over it, the best merge is taken even when it lowers the mean)."""
    partition = [[t] for t in tasks]
    current, count = scorer.plan(partition), 1
    while True:
        over = max_groups is not None and len(partition) > max_groups
        best: tuple[Plan, list[list[str]]] | None = None
        for merged in _merges(partition):
            candidate, count = scorer.plan(merged), count + 1
            if _better(candidate, best[0] if best else None if over else current):
                best = (candidate, merged)
        if best is None:
            return (None if over else current), count
        current, partition = best


def search(
    scorer: GroupScorer, tasks: list[str], max_groups: int | None = None
) -> tuple[Plan | None, str, int]:
    """(best plan, how it was searched, partitions scored); exhaustive up to MAX_EXHAUSTIVE tasks."""
    plural = "" if max_groups == 1 else "s"
    budget = f", at most {max_groups} module{plural}" if max_groups is not None else ""
    if len(tasks) <= MAX_EXHAUSTIVE:
        best, count = _exhaustive(scorer, tasks, max_groups)
        return best, f"exhaustive over all {count} partitions{budget}", count
    best, count = _greedy(scorer, tasks, max_groups)
    return (
        best,
        f"greedy merging ({len(tasks)} tasks > {MAX_EXHAUSTIVE}; {count} partitions scored{budget})",
        count,
    )


@dataclass(frozen=True)
class Proposal:
    """The partition a cheap signal proposes (`propose`); `best` is None when nothing fits the budget."""

    best: Plan | None
    search: str
    partitions: int


def propose(tasks: list[str], gains: dict[tuple[str, str], float], max_groups: int | None = None) -> Proposal:
    """The partition of `tasks` with the highest mean signal from group partners (a task alone: 0);
    gains[(a, b)]: what a gets from sharing with b (missing pairs: unknown, never grouped on)."""
    scorer = GroupScorer(tasks, {t: 0.0 for t in tasks}, gains)
    return Proposal(*search(scorer, tasks, max_groups))


def recommend(
    tasks: list[str],
    single: dict[str, float],
    transfer: dict[tuple[str, str], float],
    measured: dict[frozenset[str], dict[str, float]] | None = None,
    costs: dict[frozenset[str], Cost] | None = None,
    *,
    max_groups: int | None = None,
) -> Recommendation | None:
    """The best partition of `tasks` (each needs a single-task score) and the two reference plans;
    None when no partition within `max_groups` rests on measurements."""
    missing = [t for t in tasks if t not in single]
    if missing:
        raise ValueError(f"no single-task score for {missing}: run the `single` task set first")
    scorer = GroupScorer(tasks, single, transfer, measured, costs)
    best, how, count = search(scorer, tasks, max_groups)
    if best is None:
        return None
    notes = []
    all_in_one = scorer.plan([list(tasks)])
    if any(scorer(list(pair)).source == "unknown" for pair in combinations(tasks, 2)):
        notes.append(
            "groupings not run as such whose tasks have no measured pairwise transfer were left out: "
            "no measurement is not the same as no transfer. Run the `pairs` task set to score them"
        )
    if any(g.source == "estimated" for g in best.groups):
        notes.append(
            "groups marked 'estimated' were not run as such: single-task score + mean pairwise transfer; "
            "run them to confirm"
        )
    return Recommendation(best, scorer.plan([[t] for t in tasks]), all_in_one, how, count, notes)
