"""Expand a study's grid into train configs, one per run.

A one-task run is a `mode: single` config with that one task: the store then records it as a single-task
run and its key is the key `mtpeft train --mode single` gives the same task and settings. Every other
group is a `mode: multi` run with one shared module. Analyses classify runs by their task list alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mtpeft.config import TaskEntry, TrainConfig, validate_config
from mtpeft.errors import ConfigError
from mtpeft.study.spec import Grid, MethodChoice, StudySpec, TaskSet

Group = tuple[str, ...]


@dataclass(frozen=True)
class PlannedRun:
    config: TrainConfig
    method_label: str
    group: Group
    task_set: str  # "single" | "all" | "pair" | "group"
    key: str  # run_key of the config: what the store matches finished runs on

    @property
    def display_name(self) -> str:
        """The name the store will show (single mode appends the task, as `mtpeft train` does)."""
        return f"{self.config.name}-{self.group[0]}" if self.config.mode == "single" else self.config.name


# Registry: task-set name -> groups of task labels.
TASK_SETS: dict[str, Callable[[list[str]], list[Group]]] = {
    "single": lambda labels: [(label,) for label in labels],
    "all": lambda labels: [tuple(labels)],
    "pairs": lambda labels: list(itertools.combinations(labels, 2)),
}


def run_key_of(config: TrainConfig) -> str:
    return config.run_key()


def groups_of(task_set: TaskSet, labels: list[str]) -> list[Group]:
    if isinstance(task_set, str):
        return TASK_SETS[task_set](labels)
    order = {label: i for i, label in enumerate(labels)}  # keep the study's task order inside a group
    return [tuple(sorted(dict.fromkeys(group), key=order.__getitem__)) for group in task_set]


def group_kind(group: Group, all_labels: list[str]) -> str:
    if len(group) == 1:
        return "single"
    if set(group) == set(all_labels):
        return "all"
    return "pair" if len(group) == 2 else "group"


def group_label(group: Group, all_labels: list[str]) -> str:
    return "all" if len(group) > 1 and set(group) == set(all_labels) else "+".join(group)


def _config(
    spec: StudySpec, entries: dict[str, TaskEntry], model: str, method: MethodChoice, group: Group, seed: int
) -> TrainConfig:
    labels = list(entries)
    single = len(group) == 1
    name = f"{spec.name}-{model}-{method.display}-s{seed}"
    data: dict[str, Any] = (
        dict(spec.base)
        | method.overrides
        | {
            "name": name if single else f"{name}-{group_label(group, labels)}",
            "mode": "single" if single else "multi",
            "model": model,
            "method": method.name,
            "method_options": method.options,
            "seed": seed,
            "tasks": [entries[label].model_dump(mode="json") | method.task_overrides for label in group],
            "workspace": spec.workspace,
            "study": spec.name,
        }
    )
    return validate_config(data)


def _cells(grid: Grid, labels: list[str]) -> Iterator[tuple[str, MethodChoice, Group, int]]:
    groups = list(dict.fromkeys(g for ts in grid.task_sets for g in groups_of(ts, labels)))
    return itertools.product(grid.models, grid.methods, groups, grid.seeds)


def _field_of(field: str | None, method: MethodChoice) -> str:
    """Where in the study file a bad run config came from: a method's task_overrides, else the base."""
    parts = (field or "").split(".")
    if len(parts) == 3 and parts[0] == "tasks" and parts[2] in method.task_overrides:
        return f"methods[{method.display}].task_overrides.{parts[2]}"
    return f"base.{field}" if field else "base"


def expand(spec: StudySpec) -> list[PlannedRun]:
    """Every run of the grid, once (a pair that is also `all`, or a repeated group, runs once)."""
    entries = {entry.label: entry for entry in spec.task_entries()}
    labels = list(entries)
    planned: dict[str, PlannedRun] = {}
    for model, method, group, seed in (cell for grid in spec.all_grids for cell in _cells(grid, labels)):
        try:
            config = _config(spec, entries, model, method, group, seed)
        except ConfigError as err:  # located in the study file by the caller (it knows the path)
            raise ConfigError(
                f"the study's base config (with method {method.display!r}'s overrides) does not make a "
                f"valid train config: {err.reason}",
                field=_field_of(err.field, method),
            ) from err
        key = run_key_of(config)
        planned.setdefault(key, PlannedRun(config, method.display, group, group_kind(group, labels), key))
    return list(planned.values())
