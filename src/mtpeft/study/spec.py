"""The study YAML: a base train config, the task list and a grid over models x methods x task sets x seeds.

Relative paths (workspace, task data) are read from the directory `mtpeft study` runs in: run it from the
repository root. `{workspace}` inside a task's `data` is replaced by the study's workspace, so that
`--workspace` moves the data with it (e.g. `data: "{workspace}/data/py-defect"`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtpeft.config import Seed, TaskEntry
from mtpeft.config_files import Workspace, expand_workspace, read_yaml_mapping, validate_model
from mtpeft.errors import ConfigError, shorten, shorten_list
from mtpeft.merging.settings import MergeSettings

# Grid dimensions: the study sets these per run, so the base config must not.
GRID_FIELDS = ("tasks", "model", "method", "method_options", "seed", "mode", "name", "workspace", "study")
NAMED_TASK_SETS = ("single", "all", "pairs")

TaskSet = str | list[list[str]]  # a name of NAMED_TASK_SETS, or explicit groups of task names


def _without_grid_fields(fields: dict[str, Any], where: str) -> dict[str, Any]:
    clash = sorted(set(fields) & set(GRID_FIELDS))
    if clash:
        raise ValueError(f"{clash} are set by the study (its tasks list and grid), not in {where}")
    return fields


class MethodChoice(BaseModel):
    """One method of the grid, with its options (`lora` alone is short for `{name: lora}`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    options: dict[str, Any] = Field(default_factory=dict, description="method_options of its runs.")
    label: str | None = Field(default=None, description="Shown in run names and reports; default: name.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Base fields this method's runs change (e.g. a lower lr for full)."
    )
    task_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields every task entry of this method's runs changes (e.g. max_length: 512).",
    )

    @field_validator("overrides")
    @classmethod
    def _no_grid_fields(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        return _without_grid_fields(overrides, "a method's `overrides`")

    @field_validator("task_overrides")
    @classmethod
    def _no_task_identity(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(overrides) & {"task", "name", "data"})
        if clash:
            raise ValueError(f"{clash} say which task it is: set them in the study's `tasks`, not here")
        return overrides

    @property
    def display(self) -> str:
        return self.label or self.name


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    models: list[str] = Field(default_factory=lambda: ["minilm"], min_length=1)
    methods: list[MethodChoice] = Field(min_length=1)
    task_sets: list[TaskSet] = Field(default_factory=lambda: ["single", "all"], min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    merges: list[MergeSettings] = Field(
        default_factory=list,
        description="Merged arms, built without training: each merges the grid's single-task runs of one "
        "model, method and seed into one run (`mtpeft merge`), e.g. [{method: ties, density: 0.5}].",
    )

    @model_validator(mode="after")
    def _merges_need_single_runs(self) -> Grid:
        if self.merges and "single" not in self.task_sets:
            raise ValueError(
                "`merges` merge the grid's single-task runs: add `single` to its task_sets, or move the "
                "merges to the grid that has them"
            )
        return self

    @field_validator("methods", mode="before")
    @classmethod
    def _short_methods(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": m} if isinstance(m, str) else m for m in value]
        return value

    @field_validator("task_sets")
    @classmethod
    def _known_task_sets(cls, task_sets: list[TaskSet]) -> list[TaskSet]:
        for task_set in task_sets:
            if isinstance(task_set, str) and task_set not in NAMED_TASK_SETS:
                raise ValueError(
                    f"unknown task set {shorten(task_set, 40)}; use {', '.join(NAMED_TASK_SETS)} "
                    "or a list of task groups, e.g. [[vulnerability, flaky], [clone]]"
                )
        return task_sets

    @model_validator(mode="after")
    def _unique_method_labels(self) -> Grid:
        labels = [m.display for m in self.methods]
        dupes = sorted(label for label, n in Counter(labels).items() if n > 1)  # Counter: linear
        if dupes:
            raise ValueError(
                f"two methods share the label {shorten_list(dupes)}; give each a distinct `label:`"
            )
        return self


class RayOptions(BaseModel):
    """Resources of each run when `executor: ray` (one Ray task per run)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    address: str | None = Field(
        default=None,
        description="Cluster to join: `auto` (this machine's `ray start`), HOST:PORT, or "
        "ray://HOST:10001; None starts a Ray of this machine alone.",
    )
    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    max_retries: int = Field(
        default=3,
        ge=0,
        description="Times Ray runs a run again on another node when its node dies "
        "(it resumes from its last checkpoint in `storage`).",
    )


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    description: str = ""
    workspace: Workspace = Field(default="workspace")
    executor: str = "local"
    ray: RayOptions = Field(default_factory=RayOptions)
    storage: str | None = Field(
        default=None,
        description="Where run directories go under `executor: ray`: a path every node mounts, or an "
        "fsspec URL (s3://bucket/prefix, file:///shared/dir); default: the workspace.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options of `storage` (e.g. endpoint_url for S3)."
    )
    base: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields shared by every run.")
    tasks: list[TaskEntry] = Field(min_length=1)
    grid: Grid | None = Field(default=None, description="models x methods x task sets x seeds.")
    # Or several grids whose runs add up (e.g. two methods on one model, one on another): each a full
    # product of its own models, methods, task sets and seeds.
    grids: list[Grid] | None = Field(default=None, min_length=1, description="Several grids, runs added.")

    @model_validator(mode="after")
    def _one_grid_field(self) -> StudySpec:
        if (self.grid is None) == (self.grids is None):
            raise ValueError("give `grid:` (one grid) or `grids:` (a list of them), not both and not neither")
        return self

    @property
    def all_grids(self) -> list[Grid]:
        return self.grids if self.grids is not None else [self.grid]  # type: ignore[list-item]

    @field_validator("base")
    @classmethod
    def _no_grid_fields_in_base(cls, base: dict[str, Any]) -> dict[str, Any]:
        return _without_grid_fields(base, "`base`")

    @model_validator(mode="after")
    def _task_sets_name_known_tasks(self) -> StudySpec:
        labels = {t.label for t in self.tasks}
        for task_set in (ts for grid in self.all_grids for ts in grid.task_sets):
            if isinstance(task_set, str):
                continue
            for group in task_set:
                unknown = sorted(set(group) - labels)
                if unknown or not group:
                    raise ValueError(
                        f"task set group [{shorten_list(group)}] names unknown tasks "
                        f"[{shorten_list(unknown)}]; "
                        f"known: {shorten_list(sorted(labels))}"
                    )
        return self

    def with_workspace(self, workspace: str | None) -> StudySpec:
        if workspace is None:
            return self
        try:  # --workspace: the same rule as the file's field (model_copy does not validate)
            return self.model_copy(update={"workspace": expand_workspace(workspace)})
        except ValueError as err:
            raise ConfigError(str(err), field="--workspace") from None

    def task_entries(self) -> list[TaskEntry]:
        """The task list with `{workspace}` in data paths filled in."""
        return [
            entry.model_copy(update={"data": entry.data.replace("{workspace}", self.workspace)})
            if entry.data
            else entry
            for entry in self.tasks
        ]


def parse_study(data: dict[str, Any], *, path: str | Path | None = None) -> StudySpec:
    return validate_model(StudySpec, data, path=path)


def load_study(path: str | Path) -> StudySpec:
    data = read_yaml_mapping(path, what="study file", expected="name, workspace, base, tasks, grid")
    return parse_study(data, path=path)
