"""A study's merged arms: the grid's single-task runs of one model, method and seed merged into one run
(`mtpeft merge`) once they are trained. Nothing trains, so a merged arm costs its merge and evaluation
only; like a run, a merge already in the store (same sources, same settings) is skipped.

Merges run in the study's own process after the training runs (under `executor: ray` too), reading the
source runs' directories from local disk.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

from mtpeft import layout
from mtpeft.merging.settings import MergeSettings
from mtpeft.paths import inside, safe_filename
from mtpeft.store import RunStore, config_hash
from mtpeft.study.grid import PlannedRun
from mtpeft.study.runner import Outcome, latest_by_key, store_path
from mtpeft.study.spec import StudySpec


@dataclass(frozen=True)
class PlannedMerge:
    settings: MergeSettings
    model: str
    method_label: str
    seed: int
    sources: tuple[PlannedRun, ...]  # the single-task runs, in the study's task order
    key: str  # from the sources' run keys and the settings: what the store matches a done merge on

    @property
    def display_name(self) -> str:
        density = f"-d{self.settings.density:g}" if self.settings.density is not None else ""
        weights = "-w" + "_".join(f"{w:g}" for w in self.settings.weights) if self.settings.weights else ""
        first = self.sources[0].config.name  # <study>-<model>-<method>-s<seed>
        return f"{first}-merged-{self.settings.method}{density}{weights}"

    def run_dir(self, spec: StudySpec) -> Path:
        runs = Path(spec.workspace) / layout.RUNS_DIR
        return inside(runs, runs / f"{safe_filename(self.display_name)}-{self.key[:10]}")


def plan_merges(spec: StudySpec, planned: list[PlannedRun]) -> tuple[list[PlannedMerge], list[str]]:
    """Every merge the study's grids ask for, and a note for each method left out (not mergeable)."""
    if not any(grid.merges for grid in spec.all_grids):
        return [], []
    from mtpeft.peft_methods import get_method  # imports torch: only for studies that merge

    labels = [entry.label for entry in spec.task_entries()]
    singles = {
        (p.config.model, p.method_label, p.config.seed, p.group): p for p in planned if len(p.group) == 1
    }
    merges: dict[str, PlannedMerge] = {}
    notes: list[str] = []
    for grid in (g for g in spec.all_grids if g.merges):
        for method in grid.methods:
            problem = getattr(get_method(method.name), "merge_problem", "not mergeable")
            if problem:
                notes.append(f"merges: method {method.display} is left out ({problem})")
                continue
            for settings, model, seed in itertools.product(grid.merges, grid.models, grid.seeds):
                sources = tuple(singles[(model, method.display, seed, (label,))] for label in labels)
                key = config_hash(
                    {"merge": settings.record(len(sources)), "sources": [s.key for s in sources]}
                )
                merges.setdefault(key, PlannedMerge(settings, model, method.display, seed, sources, key))
    return list(merges.values()), notes


def merge_status(
    spec: StudySpec, merges: list[PlannedMerge], store: RunStore | None
) -> dict[str, str | None]:
    """key -> the latest store status of each merge (None: never made)."""
    latest = latest_by_key(store.list_runs(study=spec.name)) if store is not None else {}
    return {m.key: latest[m.key].status if m.key in latest else None for m in merges}


def run_merges(spec: StudySpec, merges: list[PlannedMerge], *, progress: bool = False) -> list[Outcome]:
    """Make every merge the store does not have yet whose source runs all finished."""
    if not merges:
        return []
    latest = latest_by_key(RunStore(store_path(spec)).list_runs(study=spec.name))
    return [_run_one(spec, merge, latest, progress) for merge in merges]


def _run_one(spec: StudySpec, merge: PlannedMerge, latest: dict, progress: bool) -> Outcome:
    from mtpeft.merging.merge import merge_runs

    name, previous = merge.display_name, latest[merge.key].status if merge.key in latest else None
    if previous == "finished":
        return Outcome(name, merge.key, "skipped", previous=previous)
    unfinished = [
        s.display_name for s in merge.sources if getattr(latest.get(s.key), "status", None) != "finished"
    ]
    if unfinished:
        error = f"its source runs have not finished: {', '.join(unfinished)}; run the study again to retry"
        return Outcome(name, merge.key, "failed", 0, previous, error)
    out = merge.run_dir(spec)
    shutil.rmtree(out, ignore_errors=True)  # what an earlier, failed attempt of this merge left
    try:
        merge_runs(
            [Path(latest[s.key].run_dir) for s in merge.sources],
            merge.settings,
            out,
            progress=progress,
            study=spec.name,
            key=merge.key,
            name=name,
        )
    except Exception as err:  # one failed merge must not stop the study (as a failed run does not)
        return Outcome(name, merge.key, "failed", 1, previous, f"{type(err).__name__}: {err}")
    return Outcome(name, merge.key, "merged", 1, previous)
