"""Live training curves through accelerate's experiment trackers (`log_with: tensorboard`, wandb, ...).

accelerate owns the trackers: which names exist, starting them (`init_trackers`), writing values
(`Accelerator.log`, main process only) and closing them. What is ours: refusing a name or a missing
package before anything is written (accelerate would drop an uninstalled tracker with a debug line),
the tag names, and turning every value into a plain float. The tags (docs/training/tracking.md):

    loss/<task>, loss_weight/<task>, lr/<group>, throughput/tokens_per_s, throughput/examples_per_s
    (every step); val/score and val/<task>/<metric> (test/<task>/<metric> with curve_test) at each
    validation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtpeft.errors import ConfigError
from mtpeft.paths import safe_filename

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mtpeft.config import TrainConfig
    from mtpeft.training.cost import CostMeter

TRACKING_DIR = "tracking"  # RUN_DIR/tracking/<run name>/: what trackers with local files write
ALL = "all"  # accelerate's name for every tracker installed here
# The pip requirement of each tracker whose package name is not the tracker's own name; accelerate
# checks for the import name (comet_ml) and, for aim, a version below 4.
_PIP_NAMES = {"comet_ml": "comet-ml", "aim": "'aim<4'"}
# The optimiser's parameter groups, in the order MultiTaskTrainer._optimizer builds them.
LR_GROUPS = ("shared", "heads")


def check_trackers(names: list[str], *, field: str = "log_with") -> None:
    """Refuse a tracker accelerate does not know, or one whose package is not installed here."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    known = sorted(LOGGER_TYPE_TO_CLASS)
    installed = {str(t) for t in get_available_trackers()}
    for position, name in enumerate(names):
        where = f"{field}.{position}" if len(names) > 1 else field
        if name == ALL:
            if not installed:
                raise ConfigError(
                    "log_with: all, but no tracker accelerate supports is installed; "
                    "install one, e.g. pip install tensorboard",
                    field=where,
                )
            continue
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(
                f"unknown tracker {name!r}; accelerate supports {', '.join(known)} (or {ALL}: every "
                "installed one)",
                field=where,
            )
        if name not in installed:
            raise ConfigError(
                f"tracker {name!r} is not installed; pip install {_PIP_NAMES.get(name, name)}",
                field=where,
            )


def tracking_dir(run_dir: Path) -> Path:
    return run_dir / TRACKING_DIR


def _floats(values: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats: trackers take Python numbers, not 0-d tensors or numpy scalars."""
    return {key: float(value) for key, value in values.items()}


def _flat_config(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The run's settings as the flat scalars trackers store as hyperparameters (TensorBoard's hparams
    take bool/int/float/str only): scalars as they are, nested fields as JSON text."""
    data = config.model_dump(mode="json")
    flat: dict[str, Any] = {"run_key": config.run_key(), "run_dir": run_dir.name}
    flat["tasks"] = ",".join(entry.label for entry in config.tasks)
    for key, value in data.items():
        if key == "tasks" or value is None:
            continue
        flat[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat


class Tracking:
    """One run's curves: started once per training (a resume included), then a call per step and per
    validation. Built only when `log_with` is set; the trainer holds None otherwise, so a run without
    trackers computes none of these values."""

    def __init__(self, accelerator: Accelerator, config: TrainConfig, run_dir: Path) -> None:
        self.accelerator = accelerator
        self.config = config
        self.run_dir = run_dir
        self._step_started = 0.0
        self._tokens = 0
        self._samples = 0

    def start(self, *, step: int) -> None:
        """Open the trackers; `step`: the step training continues from (0, or a resumed checkpoint's).

        A resumed run continues its curves: steps go on from `step`, and TensorBoard's `purge_step`
        hides the points a stopped attempt logged after that checkpoint (they are trained again).
        The settings are stored once, when the run starts from step 0."""
        self.accelerator.init_trackers(
            safe_filename(self.config.name),
            config=_flat_config(self.config, self.run_dir) if step == 0 else None,
            init_kwargs={"tensorboard": {"purge_step": step + 1}},
        )

    def begin_step(self, meter: CostMeter) -> None:
        self._step_started = time.perf_counter()
        self._tokens, self._samples = meter.tokens, meter.samples

    def end_step(
        self,
        step: int,
        meter: CostMeter,
        *,
        losses: Mapping[str, Any],
        weights: Mapping[str, Any],
        lrs: list[Any],
    ) -> None:
        """The step's values: each task's loss and weight, each group's learning rate, and throughput:
        the step's real tokens and examples (all processes) over its wall time (forward, backward,
        optimiser step; not validation or checkpoints)."""
        seconds = time.perf_counter() - self._step_started
        values = {f"loss/{task}": value for task, value in losses.items()}
        values |= {f"loss_weight/{task}": value for task, value in weights.items()}
        values |= {f"lr/{group}": lr for group, lr in zip(LR_GROUPS, lrs, strict=True)}
        if seconds > 0:
            values["throughput/tokens_per_s"] = (meter.tokens - self._tokens) / seconds
            values["throughput/examples_per_s"] = (meter.samples - self._samples) / seconds
        self.accelerator.log(_floats(values), step=step)

    def validation(
        self,
        step: int,
        *,
        score: float,
        metrics: Mapping[str, Mapping[str, Any]],
        test: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """The selection score (mean primary metric over tasks) and every metric of every task."""
        values: dict[str, Any] = {"val/score": score}
        for split, scores in (("val", metrics), ("test", test or {})):
            for task, task_metrics in scores.items():
                values |= {f"{split}/{task}/{metric}": value for metric, value in task_metrics.items()}
        self.accelerator.log(_floats(values), step=step)

    def finish(self) -> None:
        """Close the trackers (flushes TensorBoard's file). Not Accelerator.end_training: that also
        destroys the process group, which evaluation after training (and a study's next run) still use."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()  # finished once, whichever way training ended
