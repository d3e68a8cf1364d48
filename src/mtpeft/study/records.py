"""The finished runs of a study, indexed for analysis: by arm (model x method), task group and seed.

A run's group is its task list; the study's grid dimension it came from is not needed (a pair of two tasks
out of two is the `all` run too). Scores are each task's primary metric on one split (test by default).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mtpeft.errors import MtpeftError
from mtpeft.layout import per_example_path
from mtpeft.store import RunRecord
from mtpeft.store.sqlite import MERGED, PROMPTING
from mtpeft.study.grid import Group, group_kind

SPLIT = "test"
FULL_METHOD = "full"


@dataclass(frozen=True)
class Arm:
    """One model x method (x method options, when the study varies them) of the grid."""

    model: str
    method: str  # display label, e.g. "lora" or "lora(r=16)"
    method_name: str = ""  # the PEFT method itself ("full" for full fine-tuning)
    merged: bool = False  # made by `mtpeft merge` from trained runs, not trained (label "... merged ...")

    def __str__(self) -> str:
        return f"{self.model} / {self.method}"

    @property
    def is_full(self) -> bool:
        return self.method_name == FULL_METHOD


@dataclass(frozen=True)
class RunView:
    record: RunRecord
    arm: Arm
    group: Group  # task labels in the study's order
    kind: str  # "single" | "all" | "pair" | "group"


# Config fields that place a run in the grid (which model, method, tasks, seed) or only say how it was
# watched and stored: runs that differ in them alone are still one arm.
_PLACEMENT_FIELDS = frozenset(
    {
        "name",
        "mode",
        "model",
        "method",
        "method_options",
        "tasks",
        "seed",
        "workspace",
        "study",
        "save_every",
        "curve_test",
        "grad_conflict_every",
        "affinity",
        "evaluate_splits",
        "baselines",
        "log_with",
        "distributed",
    }
)
# formulation (heads or instruct) is its own arm suffix, below.
_TASK_PLACEMENT_FIELDS = frozenset({"task", "name", "data", "eval_batch_size", "formulation"})


def _run_settings(record: RunRecord) -> dict[str, Any]:
    """The run's result-defining training settings (a field an older run lacks reads as its default)."""
    from mtpeft.config import TrainConfig

    return {
        name: record.config.get(name, field.get_default(call_default_factory=True))
        for name, field in TrainConfig.model_fields.items()
        if name not in _PLACEMENT_FIELDS
    }


def _entry_label(entry: dict[str, Any]) -> str:
    """A stored task entry's name in the run: its alias, else the task's own name."""
    from mtpeft.tasks.registry import task_label

    return entry.get("name") or task_label(entry["task"])


def _task_settings(record: RunRecord) -> dict[tuple[str, str], Any]:
    """(task label, field) -> value for the per-task settings of the run's tasks."""
    from mtpeft.config import TaskEntry

    settings: dict[tuple[str, str], Any] = {}
    for entry in record.config.get("tasks", []):
        label = _entry_label(entry)
        for name, field in TaskEntry.model_fields.items():
            if name not in _TASK_PLACEMENT_FIELDS:
                settings[(label, name)] = entry.get(name, field.get_default(call_default_factory=True))
    return settings


def _varying(values_by_key: dict[Any, list[Any]]) -> set[Any]:
    return {
        key
        for key, values in values_by_key.items()
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1
    }


def _setting_parts(records: list[RunRecord]) -> dict[str, list[str]]:
    """run_id -> `field=value` for the settings that differ between runs of one model and method.

    Without this, runs of one method at two sequence lengths (or learning rates) would count as seeds of
    one arm and be averaged together. A per-task field differs only when one task ran with two values:
    tasks that simply have different batch sizes do not split the arm.
    """
    by_arm: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        by_arm[(r.model, r.method)].append(r)
    parts: dict[str, list[str]] = {}
    for runs in by_arm.values():
        settings = {r.run_id: _run_settings(r) for r in runs}
        per_task = {r.run_id: _task_settings(r) for r in runs}
        run_values: dict[str, list[Any]] = defaultdict(list)
        task_values: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in runs:
            for key, value in settings[r.run_id].items():
                run_values[key].append(value)
            for key, value in per_task[r.run_id].items():
                task_values[key].append(value)
        varying = sorted(_varying(run_values))
        varying_task_fields = sorted({name for _, name in _varying(task_values)})
        for r in runs:
            own = [f"{k}={settings[r.run_id][k]}" for k in varying]
            for name in varying_task_fields:
                values = sorted({str(v) for (_, field), v in per_task[r.run_id].items() if field == name})
                own.append(f"{name}={'/'.join(values)}")
            parts[r.run_id] = own
    return parts


def _method_labels(records: list[RunRecord]) -> dict[str, str]:
    """run_id -> method label; options and settings are shown only where they vary between runs.
    A merged run (`mtpeft merge`) is its own arm, named after its source runs' (_merged_label)."""
    trained = [r for r in records if r.mode != MERGED]
    labels = _trained_labels(trained)
    return labels | {r.run_id: _merged_label(r, labels) for r in records if r.mode == MERGED}


def _merged_label(record: RunRecord, labels: dict[str, str]) -> str:
    """`<the sources' arm label> merged <merge method>`, e.g. "lora merged ties" (the merge's own options,
    rank and targets, are not the arm's: they follow from the sources and the merge method)."""
    merge = record.details.get("merge") or record.config.get("merge") or {}
    sources = {labels.get(str(s.get("run_id"))) for s in merge.get("sources", [])}
    base = sources.pop() if len(sources) == 1 and None not in sources else record.method
    return f"{base} merged {merge.get('method', '?')}"


def _trained_labels(records: list[RunRecord]) -> dict[str, str]:
    options_by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        opts = r.config.get("method_options", {}) or {}
        if opts not in options_by_method[r.method]:
            options_by_method[r.method].append(opts)
    settings = _setting_parts(records)
    labels = {}
    for r in records:
        variants = options_by_method[r.method]
        keys = sorted({k for v in variants for k in v if len({json.dumps(x.get(k)) for x in variants}) > 1})
        opts = r.config.get("method_options", {}) or {}
        shown = [f"{k}={opts.get(k)}" for k in keys] + settings[r.run_id]
        labels[r.run_id] = f"{r.method}({', '.join(shown)})" if shown else r.method
    # Heads and instruct runs of one method are different arms (the heads-vs-instruct comparison);
    # named only where both occur, so existing studies keep their labels.
    forms = {r.run_id: formulation(r.config) for r in records}
    if len(set(forms.values())) > 1:
        labels = {run_id: f"{label}, {forms[run_id]}" for run_id, label in labels.items()}
    return labels


def formulation(config: dict[str, Any]) -> str:
    """`instruct` when any classification task of the run generates its label, else `heads`."""
    entries = config.get("tasks", [])
    return "instruct" if any(e.get("formulation") == "instruct" for e in entries) else "heads"


def _primary_metric(record: RunRecord, task: str, split: str) -> str | None:
    from mtpeft.tasks import get_task

    for entry in record.config.get("tasks", []):
        label = _entry_label(entry)
        if label == task:
            try:
                return get_task(entry["task"]).primary
            except Exception:  # task YAML moved since: fall back to the first stored metric
                break
    stored = record.metrics.get(split, {}).get(task, {})
    return next(iter(stored), None)


class StudyRuns:
    """Finished runs of one study (or of a whole store) and their primary test scores."""

    def __init__(self, records: list[RunRecord], *, split: str = SPLIT) -> None:
        self.records = records
        self.split = split
        # Prompted LLMs are no arm of the grid (nothing was trained); the report lists them on their own.
        self.finished = [r for r in records if r.status == "finished" and r.mode != PROMPTING]
        self.tasks: list[str] = list(dict.fromkeys(t for r in self.finished for t in r.tasks))
        labels = _method_labels(self.finished)
        order = {t: i for i, t in enumerate(self.tasks)}
        self.views = [
            RunView(
                r,
                Arm(r.model, labels[r.run_id], r.method, r.mode == MERGED),
                group := tuple(sorted(r.tasks, key=order.__getitem__)),
                group_kind(group, self.tasks),
            )
            for r in self.finished
        ]

    def same_task_settings(self, a: Arm, b: Arm) -> bool:
        """Whether two arms trained the tasks they share with the same per-task settings (lengths, batches).

        PEFT vs full fine-tuning and one model vs another compare like with like only then: a LoRA run at
        512 tokens against full fine-tuning at 128 would credit the method with the longer inputs.
        """
        ours, theirs = self._arm_task_settings(a), self._arm_task_settings(b)
        return all(ours[key] == theirs[key] for key in ours.keys() & theirs.keys())

    def _arm_task_settings(self, arm: Arm) -> dict[tuple[str, str], Any]:
        merged: dict[tuple[str, str], Any] = {}
        for view in (v for v in self.views if v.arm == arm):
            merged |= _task_settings(view.record)
        return merged

    @cached_property
    def primary(self) -> dict[str, str]:
        """task -> its primary metric (from the task spec; else the first metric stored)."""
        metrics: dict[str, str] = {}
        for view in self.views:
            for task in view.group:
                if task not in metrics and (m := _primary_metric(view.record, task, self.split)):
                    metrics[task] = m
        return metrics

    @cached_property
    def arms(self) -> list[Arm]:
        return list(dict.fromkeys(v.arm for v in self.views))  # grid order

    def groups(self, arm: Arm) -> list[Group]:
        return list(dict.fromkeys(v.group for v in self.views if v.arm == arm))

    def runs(self, arm: Arm, group: Group) -> dict[int, RunRecord]:
        """seed -> run (the latest, if a seed was run twice)."""
        return {v.record.seed: v.record for v in self.views if v.arm == arm and v.group == group}

    def score(self, record: RunRecord, task: str) -> float | None:
        metric = self.primary.get(task)
        return record.metrics.get(self.split, {}).get(task, {}).get(metric) if metric else None

    def scores(self, arm: Arm, group: Group, task: str) -> dict[int, float]:
        """seed -> primary score of `task` in the run of `group`."""
        found = {seed: self.score(r, task) for seed, r in self.runs(arm, group).items()}
        return {seed: v for seed, v in found.items() if v is not None}

    def single_scores(self, arm: Arm, task: str) -> dict[int, float]:
        return self.scores(arm, (task,), task)

    @property
    def all_group(self) -> Group:
        return tuple(self.tasks)

    def per_example(self, record: RunRecord, task: str) -> dict[str, list] | None:
        try:
            path = per_example_path(Path(record.run_dir), self.split, task)
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, MtpeftError):  # missing, damaged, or linked out of its run directory
            return None
