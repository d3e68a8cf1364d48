"""Load, subsample and tokenise the splits of every task of a run."""

from __future__ import annotations

from dataclasses import dataclass

from mtpeft.config import TaskEntry, TrainConfig
from mtpeft.data.example import Example
from mtpeft.data.formats.base import load_split
from mtpeft.data.subset import subsample
from mtpeft.errors import ConfigError
from mtpeft.modeling.inputs import TaskFeatures, tokenize_task
from mtpeft.tasks import TaskSpec, get_task


@dataclass
class RunTask:
    """One task of a run: its declaration, its config entry and its data source."""

    name: str
    spec: TaskSpec
    entry: TaskEntry

    def examples(self, split: str, *, seed: int) -> list[Example]:
        examples = load_split(self.spec, self.entry.data, split)
        limit = self.entry.max_train_examples if split == "train" else self.entry.max_eval_examples
        return subsample(examples, limit, seed=seed)

    def features(self, split: str, tokenizer, *, seed: int) -> TaskFeatures:
        return tokenize_task(self.spec, self.entry, self.examples(split, seed=seed), tokenizer)


def resolve_tasks(config: TrainConfig) -> dict[str, RunTask]:
    tasks: dict[str, RunTask] = {}
    for position, entry in enumerate(config.tasks):
        spec = get_task(entry.task)
        if not spec.trainable:
            raise ConfigError(
                f"task '{spec.name}' ({spec.kind}) is registered for loading and evaluation "
                "but cannot be trained yet",
                field=f"tasks.{position}.task",
            )
        if entry.data is None and spec.data is None:
            raise ConfigError(f"task '{spec.name}' needs a data folder", field=f"tasks.{position}.data")
        name = entry.name or spec.name
        tasks[name] = RunTask(name=name, spec=spec.with_name(name), entry=entry)
    return tasks
