"""Check a run before anything is written: a broken config leaves no store row and no run directory.

Everything that can be checked cheaply is: the config's fields (pydantic did that), the tasks (built-in
or YAML, trainable, metrics that fit their kind), their data (the folder exists and every split the run
reads parses, with the task's own reader), the model name (resolvable without downloading), the method,
and the workspace (creatable and writable). What needs the model loaded (e.g. method options that name
modules) is checked when the run starts. Each error names the config file and its field.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mtpeft.config import TaskEntry, TrainConfig
from mtpeft.config_files import located
from mtpeft.errors import ConfigError
from mtpeft.layout import RUNS_DIR, run_configs, run_dir_for
from mtpeft.tasks import TaskKind, TaskSpec, get_task
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.registry import is_task_file

if TYPE_CHECKING:
    from mtpeft.study.spec import StudySpec

Source = str | Path | None
T = TypeVar("T")
TRAIN_SPLITS = ("train", "valid")  # what the trainer reads; evaluate_splits come on top
STORE_FILE = "mtpeft.sqlite"  # the name mtpeft.training.run.store_for uses
# A Hugging Face hub id: `name` or `org/name`, letters, digits, `_ . -`, no `--`/`..`, at most 96 each.
_HUB_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"(?!.*(?:--|\.\.)){_HUB_PART}(?:/{_HUB_PART})?", re.ASCII)
# What each task kind's evaluation produces, so a metric that needs something else is refused up front.
METRIC_INPUT_OF_KIND = {
    TaskKind.BINARY: "labels",
    TaskKind.MULTICLASS: "labels",
    TaskKind.PAIR: "labels",
    TaskKind.RETRIEVAL: "ranks",
    TaskKind.GENERATION: "texts",
}


def preflight(config: TrainConfig, *, source: Source = None) -> None:
    """Raise the first problem of `config` (read from the file `source`) as one located error."""
    Preflight(source or f"config {config.name!r}").config(config)


def preflight_study(
    spec: StudySpec, configs: list[TrainConfig], *, source: str | Path, read_data: bool = True
) -> None:
    """The same checks for a study (fields named as in the study file); `configs`: its runs to train.

    read_data=False (a dry run: a cost preview, maybe before the data is built) leaves the data alone.
    """
    if not configs:  # every run is finished: the study trains nothing, so nothing needs to hold
        return
    check = Preflight(source, read_data=read_data)
    check.workspace(spec.workspace, field="workspace")
    for g, grid in enumerate(spec.all_grids):
        where = f"grids.{g}" if spec.grids is not None else "grid"
        for i, model in enumerate(grid.models):
            check.model(model, field=f"{where}.models.{i}")
        for i, method in enumerate(grid.methods):
            check.method(method.name, field=f"{where}.methods.{i}.name")
    if read_data:  # a real run (a dry run writes nothing, and stays torch-free)
        for config in configs:
            check.loss_weighting(config, field="base.loss_weighting_options")
            check.trackers(config.log_with, field="base.log_with")
    splits = list(dict.fromkeys([*TRAIN_SPLITS, *(s for c in configs for s in c.evaluate_splits)]))
    for i, entry in enumerate(spec.task_entries()):
        check.task(entry, splits, field=f"tasks.{i}")
    if read_data:  # reads the models' configs (transformers): not for a torch-free dry run
        fields = {entry.label: f"tasks.{i}" for i, entry in enumerate(spec.task_entries())}
        for config in configs:
            check.model_limits(config, fields, "base.")
    for config in configs:
        check.run_dirs(config, field="name")


class Preflight:
    """The checks, each done once per distinct input: a study checks its models, methods, tasks and data
    once, not once per run."""

    def __init__(self, source: str | Path, *, read_data: bool = True) -> None:
        self.source = source
        self.read_data = read_data
        self._done: set[tuple[str, ...]] = set()
        self._model_configs: dict[str, Any] = {}  # model name -> its transformers config, read once

    def _once(self, *key: str) -> bool:
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def config(self, config: TrainConfig) -> None:
        self.workspace(config.workspace, field="workspace")
        self.model(config.model, field="model")
        self.method(config.method, field="method")
        self.loss_weighting(config, field="loss_weighting_options")
        self.trackers(config.log_with, field="log_with")
        splits = list(dict.fromkeys([*TRAIN_SPLITS, *config.evaluate_splits]))
        for position, entry in enumerate(config.tasks):
            self.task(entry, splits, field=f"tasks.{position}")
        self.language_model(config)
        self.model_limits(config, {e.label: f"tasks.{i}" for i, e in enumerate(config.tasks)}, "")
        self.run_dirs(config, field="name")

    def language_model(self, config: TrainConfig) -> None:
        """A shipped encoder cannot train tasks that write their answer (it has no LM head)."""
        from mtpeft.models.registry import MODELS

        entry = MODELS.get(config.model)
        if entry is None or entry.architecture != "encoder":
            return  # other models are checked when loaded
        for position, task in enumerate(config.tasks):
            spec = get_task(task.task)
            if kind_of(spec).formulation(spec, task.formulation) == "instruct":
                raise self._error(
                    f"task {task.label!r} trains through a language-model head (kind {spec.kind}, "
                    f"formulation instruct), which the encoder {config.model!r} does not have; use a "
                    "decoder such as smollm2-135m (or an encoder-decoder), or formulation: heads",
                    f"tasks.{position}",
                )

    def model_limits(self, config: TrainConfig, task_fields: dict[str, str], prefix: str) -> None:
        """Lengths and sizes the model cannot take, refused before the run instead of failing at its
        first long batch (a position table too short) or allocating gigabytes (retrieval_dim).
        `task_fields`: each task's place in the file (tasks.N); `prefix`: where run-wide fields sit."""
        from mtpeft.models.limits import hidden_size, model_config, retrieval_dim_limit

        if config.model not in self._model_configs:
            self._model_configs[config.model] = model_config(config.model)
        model = self._model_configs[config.model]
        limit_dim = retrieval_dim_limit(hidden_size(model) if model is not None else None)
        if config.retrieval_dim > limit_dim:
            raise self._error(
                f"retrieval_dim {config.retrieval_dim} is more than {config.model!r} can use: the allowed "
                f"range is 8 to {limit_dim} (a projection of its hidden vectors spans at most its hidden "
                "size; larger only costs memory)",
                f"{prefix}retrieval_dim",
            )
        if model is not None:
            for entry in config.tasks:
                self._lengths_fit(config.model, model, entry, task_fields.get(entry.label, "tasks"))

    def _lengths_fit(self, name: str, model: Any, entry: TaskEntry, field: str) -> None:
        from mtpeft.models.limits import position_limit

        limit = position_limit(model)
        if limit is None:
            return
        for length_field, tokens, what in sequence_lengths(entry, model):
            if tokens > limit:
                raise self._error(
                    f"{length_field} {getattr(entry, length_field)} lets {what} reach {tokens} tokens, more "
                    f"than model {name!r} takes (its position table holds {limit}); lower {length_field} "
                    f"so that they stay within {limit}",
                    f"{field}.{length_field}",
                )

    def run_dirs(self, config: TrainConfig, *, field: str) -> None:
        """Every run directory the config makes lies inside its workspace."""
        for run in run_configs(config):
            self._guard(lambda run=run: run_dir_for(run), field=field)

    def _guard(self, check: Callable[[], T], *, field: str) -> T:
        """check(), with a ConfigError it raises located in the config file at `field`."""
        try:
            return check()
        except ConfigError as err:
            raise located(err, self.source, field=field) from err

    # ---- workspace ---------------------------------------------------------------------------------
    def workspace(self, workspace: str, *, field: str) -> None:
        if not self._once("workspace", workspace):
            return
        path = Path(workspace)
        problem = _path_problem(workspace)
        if problem is not None:
            raise self._error(f"workspace {workspace!r} cannot be a folder: {problem}", field)
        try:
            existing = _nearest_existing(path)
        except (OSError, ValueError) as err:
            raise self._error(f"workspace {workspace!r} is not a usable path: {err}", field) from err
        if not existing.is_dir():
            what = "is a file" if existing == path else f"cannot be created: {str(existing)!r} is a file"
            raise self._error(f"workspace {workspace!r} {what}; choose a folder (--workspace DIR)", field)
        if existing == path:
            self._workspace_layout(path, field)
        _probe_write(
            existing,
            lambda reason: self._error(
                f"workspace {workspace!r} is not writable ({reason} in {str(existing)!r}); "
                "choose a writable folder (--workspace DIR)",
                field,
            ),
        )

    def _workspace_layout(self, path: Path, field: str) -> None:
        runs, store = path / RUNS_DIR, path / STORE_FILE
        if runs.exists() and not runs.is_dir():
            raise self._error(f"{str(runs)!r} is a file; the workspace needs it as a folder", field)
        if store.exists() and not store.is_file():
            raise self._error(f"{str(store)!r} is not a file; move it out of the way", field)

    # ---- model and method --------------------------------------------------------------------------
    def model(self, name: str, *, field: str) -> None:
        if not self._once("model", name):
            return
        from mtpeft.models.registry import MODELS

        if name in MODELS:
            return
        known = ", ".join(MODELS)
        try:
            folder = Path(name)
            is_dir, exists = folder.is_dir(), folder.exists()
        except (OSError, ValueError):
            is_dir = exists = False
        if is_dir:
            if not (folder / "config.json").is_file():
                raise self._error(
                    f"model folder {name!r} holds no config.json, so it is not a saved Hugging Face model",
                    field,
                )
            return
        if exists or not _HUB_ID.fullmatch(name):
            raise self._error(
                f"model {name!r} is not a short name ({known}; see `mtpeft models`), an existing model "
                "folder, or a Hugging Face hub id like 'org/name'",
                field,
            )

    def method(self, name: str, *, field: str) -> None:
        if not self._once("method", name):
            return
        from mtpeft.peft_methods import get_method

        self._guard(lambda: get_method(name), field=field)

    def loss_weighting(self, config: TrainConfig, *, field: str) -> None:
        """The weighting's options (names and values) before a run directory exists: the trainer would
        refuse them only once the data and the model are loaded, leaving a failed run behind."""
        options = config.loss_weighting_options
        if not self._once("loss weighting", config.loss_weighting, repr(sorted(options.items()))):
            return
        from mtpeft.training.loss_weighting import LOSS_WEIGHTINGS
        from mtpeft.training.loss_weighting.base import resolve_options

        weighting = LOSS_WEIGHTINGS[config.loss_weighting]
        try:
            resolve_options(weighting.name, weighting.defaults, options)
        except ConfigError as err:  # err.field is loss_weighting_options.<option>
            option = (err.field or "").rpartition(".")[2]
            raise self._error(err.reason, f"{field}.{option}" if option else field) from err

    def trackers(self, names: list[str], *, field: str) -> None:
        """Each log_with tracker is one accelerate knows and is installed (accelerate itself would skip
        a missing one with a debug line, and the run would train without the curves asked for)."""
        if not names or not self._once("trackers", *names):
            return
        from mtpeft.training.tracking import check_trackers  # accelerate: not for a torch-free dry run

        try:
            check_trackers(names, field=field)
        except ConfigError as err:  # err.field: the entry at fault (log_with.1 in a list)
            raise located(err, self.source) from err

    # ---- tasks and data ----------------------------------------------------------------------------
    def task(self, entry: TaskEntry, splits: list[str], *, field: str) -> None:
        spec = self._guard(lambda: get_task(entry.task), field=f"{field}.task")
        formulation = kind_of(spec).formulation
        self._guard(lambda: formulation(spec, entry.formulation), field=f"{field}.formulation")
        if entry.valid_from_train is not None:  # valid is then a part of train
            splits = [split for split in splits if split != "valid"]
        if self._once("task", _identity(entry.task)):
            origin = entry.task if is_task_file(entry.task) else None
            try:
                _check_spec(spec)
            except ConfigError as err:  # named in the task YAML (if it is one) and at the config's field
                raise located(located(err, origin), self.source, field=f"{field}.task") from err
        self._head_name(entry.label, field=f"{field}.name" if entry.name else f"{field}.task")
        data = entry.data or spec.data
        if data is None:
            raise self._error(f"task {entry.label!r} needs a data folder (`data:`)", f"{field}.data")
        if self.read_data:
            self._data(spec.with_name(entry.label), data, splits, field=f"{field}.data")

    def _head_name(self, label: str, *, field: str) -> None:
        """Each task's head lives in a torch ModuleDict under the task's name, which refuses names with a
        dot and names of its own attributes (`keys`, `training`, `forward`, ...) with a KeyError."""
        from torch import nn

        if "." in label or hasattr(nn.ModuleDict(), label):
            raise self._error(
                f"task name {label!r} cannot be used: a task name may not contain '.' nor be one of torch's "
                "module attribute names (such as 'keys' or 'training'); give the task another `name:`",
                field,
            )

    def _data(self, spec: TaskSpec, data: str, splits: list[str], *, field: str) -> None:
        from mtpeft.data.formats.base import load_split

        folder = Path(data)
        try:
            is_dir, exists = folder.is_dir(), folder.exists()
        except (OSError, ValueError):
            is_dir = exists = False
        if not is_dir:
            problem = "is not a folder" if exists else "does not exist"
            raise self._error(
                f"data folder {data!r} of task {spec.name!r} {problem} (relative paths are read from the "
                "folder you run mtpeft in; a task YAML's own `data:` from the YAML's folder)",
                field,
            )
        for split in splits:
            if self._once("data", spec.name, spec.format, os.path.abspath(data), split):
                self._guard(lambda split=split: load_split(spec, data, split), field=field)

    def _error(self, message: str, field: str) -> ConfigError:
        return ConfigError(message, path=self.source, field=field)


def _check_spec(spec: TaskSpec) -> None:
    """A task declaration the trainer can use: trainable, a known format, metrics that fit its kind."""
    from mtpeft.data.formats.base import get_format
    from mtpeft.evaluation.metrics import get_metric

    if not spec.trainable:
        raise ConfigError(
            f"task {spec.name!r} ({spec.kind}) is registered for loading and evaluation but cannot "
            "be trained yet",
            field="trainable",
        )
    try:
        get_format(spec.format)
    except ConfigError as err:
        raise ConfigError(err.reason, field="format") from err
    wanted = METRIC_INPUT_OF_KIND[spec.kind]
    for position, name in enumerate(spec.metrics):
        try:
            metric = get_metric(name)
        except ConfigError as err:
            raise ConfigError(err.reason, field=f"metrics.{position}") from err
        if metric.consumes != wanted or (metric.binary_only and spec.kind == TaskKind.MULTICLASS):
            raise ConfigError(
                f"metric {name!r} does not apply to a {spec.kind} task", field=f"metrics.{position}"
            )


def sequence_lengths(entry: TaskEntry, model: Any) -> list[tuple[str, int, str]]:
    """(length field, the longest sequence it lets into the model, which sequence) for a task: in the
    heads formulation each input is its own sequence; through a decoder's LM head the prompt's code and
    the answer form one row (the prompt's own words come on top: the trainer checks the real rows); an
    encoder-decoder reads the prompt and writes the answer apart."""
    from mtpeft.tasks.kinds.base import LABEL_WORD_TOKENS, MAX_LENGTH_FIELD

    spec = get_task(entry.task)
    kind = kind_of(spec)
    fields = dict.fromkeys(MAX_LENGTH_FIELD[role] for role in kind.inputs)
    if kind.formulation(spec, entry.formulation) != "instruct":
        return [(f, getattr(entry, f), "one input") for f in fields]
    code = sum(getattr(entry, MAX_LENGTH_FIELD[role]) for role in kind.inputs)
    answer_field = None if kind.labelled else "max_target_length"
    answer = LABEL_WORD_TOKENS if kind.labelled else entry.max_target_length
    if getattr(model.get_text_config(), "is_encoder_decoder", False):
        prompt = [("max_length", code, "the prompt's code")]
        return prompt + ([(answer_field, answer, "the answer")] if answer_field else [])
    rows = [("max_length", code + answer, "a row of code and answer")]
    return rows + ([(answer_field, code + answer, "a row of code and answer")] if answer_field else [])


def _identity(task: str) -> str:
    """A task reference as a key: YAML paths by absolute path (two spellings, one file)."""
    return os.path.abspath(task) if is_task_file(task) else task


def _path_problem(text: str) -> str | None:
    """Why no file system can hold the path `text` (pathlib's exists() says False to each of these,
    so they would pass as "not created yet" and fail at the first write)."""
    if "\0" in text:
        return "it holds a NUL character (\\0), which no file path can; remove it"
    try:
        parts = [os.fsencode(part) for part in Path(text).parts]
    except UnicodeError:
        return "it holds characters with no file-name encoding"
    try:
        longest = os.pathconf(_nearest_existing(Path(text).absolute()), "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255  # POSIX file systems' usual NAME_MAX
    too_long = next((part for part in parts if len(part) > longest), None)
    if too_long is not None:
        return f"a folder name of {len(too_long)} bytes is longer than the {longest} this disk allows"
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_write(folder: Path, error: Callable[[str], ConfigError]) -> None:
    """Create and remove a scratch file: the only test of writability that root, ACLs and read-only
    mounts all answer truthfully (os.access says yes to root on a read-only bind mount)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".mtpeft-write-check-", dir=folder)
    except OSError as err:
        raise error(err.strerror or str(err)) from err
    os.close(handle)
    os.unlink(name)
