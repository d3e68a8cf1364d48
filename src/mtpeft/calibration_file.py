"""A run's calibration, stored beside its `best/`: RUN_DIR/calibration/, checksummed like best/.

    calibration/
      calibration.json   format, the best/ it was fitted for, the split, and per task: its temperature,
                         NLL and ECE before/after, and the reliability bins before/after
      validation.json    per task, the validation split's raw logits and gold labels: what precision
                         thresholds (`mtpeft scan --precision`) are chosen from, at any target, later
      ood.json, ood.npz  out-of-distribution statistics of the pooled vectors and their threshold
                         (mtpeft.evaluation.ood); absent from folders written before them
      MANIFEST.json      every file's size and sha256, written last (mtpeft.manifest)

The folder is written as `calibration.tmp/`, its manifest last, then renamed into place (as best/ is),
so it is whole or absent. Reading it checks every file against the manifest first and refuses a damaged
one naming the file and what to do. Later statistics of the same split (out-of-distribution scores) join
as more files of this folder, listed by the same manifest; a reader ignores files it does not know.

A folder fitted for another best/ (the run trained on since, or a best/ copied from another run) is
refused too: its temperatures belong to other weights. A run without the folder loads uncalibrated.

Stdlib and numpy only (no torch): `mtpeft scan --precision` reads it before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mtpeft import layout
from mtpeft.errors import ConfigError, DamagedFiles, shorten
from mtpeft.manifest import MANIFEST_FILE, manifest_problem, write_manifest

if TYPE_CHECKING:
    from mtpeft.evaluation.calibration import ThresholdChoice
    from mtpeft.evaluation.ood import OodStats

CALIBRATION_DIR = "calibration"
CALIBRATION_FILE = "calibration.json"
VALIDATION_FILE = "validation.json"
FORMAT = 1
UNCALIBRATED = "uncalibrated"
NO_OOD = "no out-of-distribution statistics"
# Why a classification task has no temperature: its probabilities come from the LM head's label words.
INSTRUCT_NOT_SCALED = (
    "trained through the LM head (formulation instruct): label-word probabilities are not scaled"
)


@dataclass(frozen=True)
class TaskCalibration:
    """One task's fitted temperature, what it changed on the split, and the split's raw outputs."""

    temperature: float
    labels: list[str]  # the task's label names, in logit order
    positive: int | None  # index of the label that makes a finding (binary, pair); None: multiclass
    scores: dict[str, Any]  # examples, nll_before/after, ece_before/after, reliability_before/after
    logits: list[list[float]] = field(repr=False, default_factory=list)  # validation, [examples, labels]
    gold: list[int] = field(repr=False, default_factory=list)  # validation label indices


@dataclass(frozen=True)
class Calibration:
    split: str
    bins: int
    tasks: dict[str, TaskCalibration]
    skipped: dict[str, str]  # task -> why it has no temperature (instruct, retrieval, generation)
    ood: OodStats | None = None  # None: none (an older folder, or no one-snippet task)

    @property
    def temperatures(self) -> dict[str, float]:
        return {name: task.temperature for name, task in self.tasks.items()}

    def precision_threshold(self, task: str, target: float) -> ThresholdChoice:
        """The smallest threshold on the task's calibrated P(positive) whose precision on the stored split
        reaches `target` (evaluation.calibration.precision_threshold; TargetUnreachable when none does)."""
        import numpy as np

        from mtpeft.evaluation.calibration import precision_threshold, scaled_probabilities

        fitted = self.tasks[task]
        if fitted.positive is None:
            raise ValueError(f"task {task!r} has no positive label to flag")
        probs = scaled_probabilities(np.asarray(fitted.logits), fitted.temperature)[:, fitted.positive]
        return precision_threshold(probs, np.asarray(fitted.gold) == fitted.positive, target)

    def describe(self) -> str:
        """One line for a run's info: 'temperature scaling on valid (vuln T=1.31, ...)'."""
        fitted = ", ".join(f"{name} T={task.temperature:.3g}" for name, task in self.tasks.items())
        return f"temperature scaling on {self.split} ({fitted or 'no classification task'})"


def calibration_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CALIBRATION_DIR


def best_fingerprint(run_dir: Path) -> str | None:
    """sha256 of best/MANIFEST.json, which holds every best/ file's sha256: it names best/'s contents
    without hashing the weights again. None for a best/ written before manifests."""
    manifest = Path(run_dir) / layout.BEST_DIR / MANIFEST_FILE
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None


def write_calibration(run_dir: Path, calibration: Calibration) -> Path:
    """Write RUN_DIR/calibration/ whole or not at all (scratch folder, manifest last, renamed over)."""
    final = calibration_dir(run_dir)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        head = {
            "format": FORMAT,
            "best": best_fingerprint(run_dir),
            "split": calibration.split,
            "method": "temperature",
            "ece_bins": calibration.bins,
            "tasks": {
                name: {
                    "temperature": task.temperature,
                    "labels": task.labels,
                    "positive": task.positive,
                    **task.scores,
                }
                for name, task in calibration.tasks.items()
            },
            "skipped": calibration.skipped,
        }
        outputs = {name: {"logits": t.logits, "labels": t.gold} for name, t in calibration.tasks.items()}
        (tmp / CALIBRATION_FILE).write_text(json.dumps(head, indent=1), encoding="utf-8")
        (tmp / VALIDATION_FILE).write_text(json.dumps(outputs), encoding="utf-8")
        if calibration.ood is not None:
            from mtpeft.evaluation.ood import write_ood

            write_ood(tmp, calibration.ood)
        write_manifest(tmp)
    except BaseException:  # a full disk, Ctrl-C: no half-written calibration.tmp is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def read_calibration(run_dir: Path) -> Calibration | None:
    """The run's calibration; None when it has none (an old run, or one never calibrated).

    DamagedFiles, naming the file and what to do, when the folder fails its manifest, cannot be read, or
    was fitted for another best/.
    """
    folder = calibration_dir(run_dir)
    if not folder.exists():
        return None
    if not folder.is_dir():
        _damaged(run_dir, f"{folder} is not a folder")
    problem = manifest_problem(folder)
    if problem is not None:
        _damaged(run_dir, f"{problem} in {folder}")
    try:
        head = json.loads((folder / CALIBRATION_FILE).read_text(encoding="utf-8"))
        outputs = json.loads((folder / VALIDATION_FILE).read_text(encoding="utf-8"))
        calibration = _parsed(head, outputs, folder)
    except (OSError, ValueError, KeyError, TypeError) as err:  # ValueError: JSON and UTF-8 errors
        _damaged(run_dir, f"{folder / CALIBRATION_FILE}: unreadable ({shorten(err, quoted=False)})")
    calibration = _with_ood(run_dir, folder, calibration)
    fingerprint = best_fingerprint(run_dir)
    if head.get("best") is not None and fingerprint is not None and head["best"] != fingerprint:
        _damaged(
            run_dir,
            f"{folder} was fitted for another {layout.BEST_DIR}/ than the one in {run_dir} (trained on "
            "since, or copied from another run)",
        )
    return calibration


def _with_ood(run_dir: Path, folder: Path, calibration: Calibration) -> Calibration:
    from dataclasses import replace
    from zipfile import BadZipFile

    from mtpeft.evaluation.ood import OOD_FILE, read_ood

    try:
        return replace(calibration, ood=read_ood(folder))
    except (OSError, ValueError, KeyError, TypeError, BadZipFile) as err:
        _damaged(run_dir, f"{folder / OOD_FILE}: unreadable ({shorten(err, quoted=False)})")


def _parsed(head: Any, outputs: Any, folder: Path) -> Calibration:
    if not isinstance(head, dict) or not isinstance(outputs, dict):
        raise ValueError("not a JSON object")
    version = head["format"]
    if not isinstance(version, int) or version > FORMAT:
        raise ConfigError(
            f"written by a newer mtpeft (calibration format {version!r}; this one reads up to {FORMAT}); "
            "upgrade mtpeft, or fit it again with `mtpeft calibrate RUN`",
            path=folder / CALIBRATION_FILE,
        )
    tasks = {}
    for name, entry in head["tasks"].items():
        temperature = float(entry["temperature"])
        if not 0 < temperature < math.inf:
            raise ValueError(f"task {name!r}: temperature {temperature} is not a positive number")
        scores = {k: v for k, v in entry.items() if k not in ("temperature", "labels", "positive")}
        raw = outputs[name]
        tasks[name] = TaskCalibration(
            temperature, list(entry["labels"]), entry["positive"], scores, raw["logits"], raw["labels"]
        )
    return Calibration(str(head["split"]), int(head["ece_bins"]), tasks, dict(head.get("skipped", {})))


def _damaged(run_dir: Path, problem: str) -> NoReturn:
    raise DamagedFiles(
        f"run {Path(run_dir).name}'s {CALIBRATION_DIR}/ is damaged ({problem}); fit it again with "
        f"`mtpeft calibrate {run_dir}`, or delete that folder to use the run uncalibrated"
    )


# ---- thresholds for a target precision (`mtpeft scan --precision`, `mtpeft predict --precision`) ------
@dataclass(frozen=True)
class PrecisionCut:
    """A task's threshold on P(positive label) and what it reached on the calibration split."""

    task: str
    positive_label: str
    choice: ThresholdChoice

    def note(self, target: float, split: str) -> str:
        c = self.choice
        return (
            f"{self.task}: flagged at P({self.positive_label}) >= {c.threshold:.4f}, the smallest threshold "
            f"with {split} precision >= {target} (reached {c.precision:.3f}, 97.5% lower bound "
            f"{c.precision_low:.3f}; recall {c.recall:.3f}; {c.flagged} of {c.examples} {split} examples "
            "flagged)"
        )


def precision_cuts(
    run_dir: Path, target: float, tasks: list[str] | None, option: str = "--precision"
) -> list[PrecisionCut]:
    """Per two-class task (binary, pair) of `tasks` (None: every calibrated one), the threshold that
    reaches `target` precision on the run's validation split, from RUN_DIR/calibration/ alone (no model
    loaded). InputError where the run is uncalibrated; see `cuts_for` for the rest."""
    from mtpeft.errors import InputError

    calibration = read_calibration(run_dir)
    if calibration is None:
        raise InputError(
            f"{option}: run {Path(run_dir).name} is uncalibrated (no {CALIBRATION_DIR}/ folder: trained "
            f"before calibration existed), so it has no validation outputs to choose thresholds from; run "
            f"`mtpeft calibrate {run_dir}` first"
        )
    return cuts_for(calibration, target, tasks, option)


def check_target(target: float, option: str = "--precision") -> None:
    """InputError unless `target` is a precision a threshold can be chosen for: above 0, at most 1."""
    from mtpeft.errors import InputError

    if not 0.0 < target <= 1.0:
        raise InputError(f"{option} {target}: give a precision above 0 and at most 1, e.g. 0.9")


def cuts_for(
    calibration: Calibration,
    target: float,
    tasks: list[str] | None,
    option: str = "--precision",
    tasks_option: str = "--tasks",
) -> list[PrecisionCut]:
    """`precision_cuts` on a calibration already read. InputError, naming the task and the best
    precision reachable, where the target is out of reach, and where a two-class task has no
    calibration to choose from (trained through the LM head)."""
    from mtpeft.errors import InputError
    from mtpeft.evaluation.calibration import TargetUnreachable

    check_target(target, option)
    names = list(calibration.tasks) + list(calibration.skipped) if tasks is None else tasks
    cuts = []
    for name in names:
        fitted = calibration.tasks.get(name)
        if fitted is None:
            why = calibration.skipped.get(name)
            if why == INSTRUCT_NOT_SCALED:  # a two-class task that would go unflagged without saying
                raise InputError(
                    f"{option}: task {shorten(name)} has no calibration ({why}), so no threshold can be "
                    f"chosen for it; leave it out with {tasks_option}"
                )
            continue  # retrieval, generation, or a name the command itself refuses: nothing to flag
        if fitted.positive is None:
            continue  # multiclass: no label makes a finding
        try:
            choice = calibration.precision_threshold(name, target)
        except TargetUnreachable as err:
            raise InputError(
                f"{option} {target}: task {shorten(name)} cannot reach that precision on its "
                f"{calibration.split} split at any threshold (best reachable: {err.best:.3f}, with "
                f"{err.positives} positive of {len(fitted.gold)} examples); ask for at most {err.best:.3f}, "
                f"or leave the task out with {tasks_option}"
            ) from None
        cuts.append(PrecisionCut(name, fitted.labels[fitted.positive], choice))
    return cuts
