"""Load, subsample and tokenise the splits of every task of a run."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mtpeft.config import TaskEntry, TrainConfig
from mtpeft.data.example import Example
from mtpeft.data.formats.base import load_split
from mtpeft.data.subset import subsample
from mtpeft.errors import ConfigError
from mtpeft.modeling.inputs import TaskFeatures, tokenize_task
from mtpeft.tasks import TaskSpec, get_task
from mtpeft.tasks.kinds import kind_of


@dataclass
class RunTask:
    """One task of a run: its declaration, its config entry and its data source."""

    name: str
    spec: TaskSpec
    entry: TaskEntry

    def examples(self, split: str, *, seed: int) -> list[Example]:
        examples = self._split(split, seed=seed)
        limit = self.entry.max_train_examples if split == "train" else self.entry.max_eval_examples
        return subsample(examples, limit, seed=seed)

    def _split(self, split: str, *, seed: int) -> list[Example]:
        """The split's examples; with `valid_from_train`, valid is a seeded part of train, left out of it."""
        held_out = self.entry.valid_from_train
        if held_out is None or split not in ("train", "valid"):
            return load_split(self.spec, self.entry.data, split)
        train = load_split(self.spec, self.entry.data, "train")
        if held_out >= len(train):
            raise ConfigError(
                f"task '{self.name}': valid_from_train is {held_out}, but train has only {len(train)} "
                "examples; hold out fewer",
                field="valid_from_train",
            )
        valid = set(random.Random(seed).sample(range(len(train)), held_out))
        return [e for i, e in enumerate(train) if (i in valid) == (split == "valid")]

    def features(self, split: str, tokenizer, *, seed: int, lm_head: str | None = None) -> TaskFeatures:
        """Token ids of a split; `lm_head`: the backbone's (tasks trained through it need to know which)."""
        examples = self.examples(split, seed=seed)
        return tokenize_task(self.spec, self.entry, examples, tokenizer, lm_head=lm_head)


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
        try:
            kind_of(spec).formulation(spec, entry.formulation)
        except ConfigError as err:
            raise ConfigError(err.reason, field=f"tasks.{position}.formulation") from err
        tasks[name] = RunTask(name=name, spec=spec.with_name(name), entry=entry)
    return tasks
