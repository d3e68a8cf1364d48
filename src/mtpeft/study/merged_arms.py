"""Merged arms against the runs they stand in for: per task, the merged run (`mtpeft merge`) beside the
single-task runs it was merged from, the multi-task run of its source arm and full multi-task
fine-tuning of the same model, and what each costs.

A merged arm's source arm is the arm of the runs named in its merge record (same model, method and
settings); its training cost is theirs, since merging trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtpeft.store import RunRecord
from mtpeft.store.sqlite import MERGED
from mtpeft.study.analysis import COST_KEYS, Comparison, _compare
from mtpeft.study.records import Arm, StudyRuns


@dataclass(frozen=True)
class MergedTask:
    """One task of a merged arm: merged minus single, merged minus the multi-task run (None: not run)."""

    arm: Arm  # the merged arm
    source: Arm  # the arm of its source runs
    task: str
    versus_single: Comparison | None
    versus_multi: Comparison | None
    versus_full: Comparison | None  # full fine-tuning of all tasks on the same model and task settings


@dataclass(frozen=True)
class MergedCost:
    """Mean over the seeds where the merged run, its sources and the all-task run of the source arm exist."""

    arm: Arm
    source: Arm
    seeds: list[int]
    singles: dict[str, float]  # the single-task runs, summed: the merged arm's whole training cost
    merge: dict[str, float]  # the merged run itself (training FLOPs and tokens 0)
    multi: dict[str, float] | None  # the source arm's all-task run, where there is one


def source_arms(runs: StudyRuns) -> dict[Arm, Arm]:
    """merged arm -> the arm its source runs belong to (merged arms whose sources are not in the study
    are left out: there is nothing to compare them with)."""
    arm_of = {v.record.run_id: v.arm for v in runs.views}
    found: dict[Arm, Arm] = {}
    for view in (v for v in runs.views if v.record.mode == MERGED):
        sources = (view.record.details.get("merge") or {}).get("sources", [])
        arms = {arm_of.get(str(s.get("run_id"))) for s in sources}
        if len(arms) == 1 and None not in arms:
            found.setdefault(view.arm, arms.pop())  # type: ignore[arg-type]
    return found


def merged_tasks(runs: StudyRuns) -> list[MergedTask]:
    everything = runs.all_group
    fulls = {
        arm: full
        for arm in source_arms(runs)
        for full in reversed([a for a in runs.arms if a.is_full])  # the first one wins
        if full.model == arm.model and runs.same_task_settings(arm, full)
    }
    rows = []
    for arm, source in source_arms(runs).items():
        for group in runs.groups(arm):
            for task in (t for t in group if t in runs.primary):
                single = _compare(runs, arm, task, (arm, group), (source, (task,)))
                multi = _compare(runs, arm, task, (arm, group), (source, everything))
                full = (
                    _compare(runs, arm, task, (arm, group), (fulls[arm], everything))
                    if arm in fulls
                    else None
                )
                if single or multi or full:
                    rows.append(MergedTask(arm, source, task, single, multi, full))
    return rows


def _summed(records: list[RunRecord]) -> dict[str, float]:
    return {k: float(sum(r.cost.get(k, 0) or 0 for r in records)) for k in COST_KEYS}


def merged_costs(runs: StudyRuns) -> list[MergedCost]:
    out = []
    for arm, source in source_arms(runs).items():
        for group in runs.groups(arm):
            merged = runs.runs(arm, group)
            singles = {t: runs.runs(source, (t,)) for t in group}
            seeds = sorted(s for s in merged if all(s in by_seed for by_seed in singles.values()))
            if not seeds:
                continue
            multi = runs.runs(source, runs.all_group) if set(group) == set(runs.tasks) else {}
            multi_rows = [_summed([multi[s]]) for s in seeds if s in multi]
            out.append(
                MergedCost(
                    arm,
                    source,
                    seeds,
                    _mean_rows([_summed([singles[t][s] for t in group]) for s in seeds]),
                    _mean_rows([_summed([merged[s]]) for s in seeds]),
                    _mean_rows(multi_rows) if multi_rows else None,
                )
            )
    return out


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in COST_KEYS}
