"""Signals of which tasks should share a module, read into the one form the grouping search takes.

- lookahead affinity (`affinity: {every: K}`, training/affinity.py): Z[i][j], the fraction by which a
  step on task i's gradient alone lowers task j's loss; what j gets from sharing with i is Z[i][j].
- gradient cosine (`grad_conflict_every: K`, training/grad_conflict.py): the cosine between two tasks'
  gradients on the shared module, the same both ways.
- measured transfer (a study's pair runs, study/analysis.py): T[i][j], task i's score trained with j
  minus its score alone. The reference the two cheap ones stand in for.

`gains[(a, b)]`: what task a gets from sharing a module with b (higher: better), directed. A pair with
no value is left out: unknown, never grouped on (study/grouping.py's `propose`).
Torch-free: `mtpeft group` and the report read stored numbers only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtpeft.errors import InputError

if TYPE_CHECKING:
    from mtpeft.study.analysis import TransferMatrix
    from mtpeft.study.records import Arm, StudyRuns

AFFINITY, COSINE, TRANSFER = "affinity", "cosine", "transfer"
KINDS = (AFFINITY, COSINE, TRANSFER)
TITLES = {AFFINITY: "lookahead affinity", COSINE: "gradient cosine", TRANSFER: "measured transfer"}


@dataclass(frozen=True)
class Signal:
    kind: str  # one of KINDS
    tasks: list[str]
    gains: dict[tuple[str, str], float]
    source: str  # where it was read, for the reader
    measurements: int | None = None  # summed over the runs it comes from (cheap signals)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def pair(self, a: str, b: str) -> float | None:
        """The pair's value both ways (their mean); None unless both directions are known."""
        if (a, b) not in self.gains or (b, a) not in self.gains:
            return None
        return (self.gains[(a, b)] + self.gains[(b, a)]) / 2

    def evidence(self, group: Iterable[str]) -> list[str]:
        """The values inside a group, pair by pair, in this signal's own notation."""
        return [self._describe(a, b) for a, b in combinations(list(group), 2)]

    def _describe(self, a: str, b: str) -> str:
        def value(key: tuple[str, str]) -> str:
            return signed4(self.gains[key]) if key in self.gains else "unknown"

        if self.kind == AFFINITY:  # Z[i][j] is what j gets from i
            return f"{a} -> {b}: Z = {value((b, a))}; {b} -> {a}: Z = {value((a, b))}"
        if self.kind == COSINE:
            return f"{a} / {b}: cosine = {value((a, b))}"
        return f"T[{a}][{b}] = {value((a, b))}; T[{b}][{a}] = {value((b, a))}"


def signed4(value: float) -> str:
    """4 significant digits with a sign; rounding noise of a mean (1e-18) shows as 0."""
    return f"{round(value, 12) + 0.0:+.4g}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---- one run's files or stored summaries ---------------------------------------------------------------
def affinity_signal(summaries: list[dict[str, Any]], source: str, order: list[str] | None = None) -> Signal:
    """Z of one run's affinity summary (details.affinity or RUN_DIR/affinity.json), or the mean over
    several runs' (each run weighs the same, however often it measured)."""
    values: dict[tuple[str, str], list[float]] = {}
    tasks: list[str] = list(order or [])
    measurements = 0
    for summary in summaries:
        names = summary.get("tasks", [])
        tasks += [t for t in names if t not in tasks]
        measurements += int(summary.get("measurements", 0))
        for i, row in enumerate(summary.get("z", [])):
            for j, z in enumerate(row):
                if i != j and _finite(z):  # the diagonal (a task on itself) is no evidence for a group
                    values.setdefault((names[j], names[i]), []).append(float(z))
    gains = {key: sum(v) / len(v) for key, v in values.items()}
    return Signal(AFFINITY, tasks, gains, source, measurements)


def cosine_signal(summaries: list[dict[str, Any]], source: str, order: list[str] | None = None) -> Signal:
    """Mean cosines of one run's gradient-conflict summary (details.grad_conflict or
    RUN_DIR/grad_conflict.json), or the mean over several runs' (each run weighs the same)."""
    values: dict[tuple[str, str], list[float]] = {}
    tasks: list[str] = list(order or [])
    measurements = 0
    for summary in summaries:
        measurements += int(summary.get("measurements", 0))
        for key, stats in summary.get("pairs", {}).items():
            a, _, b = key.partition(" | ")  # training/grad_conflict.py's pair_key
            tasks += [t for t in (a, b) if t not in tasks]
            if _finite(stats.get("mean")):
                for pair in ((a, b), (b, a)):
                    values.setdefault(pair, []).append(float(stats["mean"]))
    gains = {key: sum(v) / len(v) for key, v in values.items()}
    return Signal(COSINE, tasks, gains, source, measurements)


def transfer_signal(matrix: TransferMatrix, source: str) -> Signal:
    return Signal(TRANSFER, list(matrix.tasks), matrix.as_dict(), source)


# Where a run directory keeps each cheap signal (training/trainer.py writes them; layout names them).
RUN_FILES = {AFFINITY: "affinity.json", COSINE: "grad_conflict.json"}
_SETTING = {AFFINITY: "`affinity: {every: K}`", COSINE: "`grad_conflict_every: K`"}


def run_signal(run_dir: Path, kind: str | None = None) -> Signal:
    """The run's lookahead affinity (default, when it measured any) or gradient cosines."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a run directory (a folder under WORKSPACE/runs/)")
    kinds = [kind] if kind else [AFFINITY, COSINE]
    for candidate in kinds:
        path = run_dir / RUN_FILES[candidate]
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # RecursionError: deeply nested JSON
            raise InputError(f"{path} is unreadable ({err}); train the run again to rewrite it") from err
        if not isinstance(summary, dict) or not summary.get("measurements"):
            if kind:
                raise InputError(f"{path} holds no measurement: the run was shorter than K steps")
            continue
        read = affinity_signal if candidate == AFFINITY else cosine_signal
        return read([summary], str(path), _run_tasks(run_dir))
    wanted = " or ".join(f"{RUN_FILES[k]} ({_SETTING[k]})" for k in kinds)
    raise InputError(
        f"{run_dir} holds no measured {wanted}: train a multi-task run with that setting, "
        "or give a study (--study) to group on its measured transfer"
    )


def _run_tasks(run_dir: Path) -> list[str] | None:
    """The run's task labels in its config's order (pair keys alone sort them)."""
    from mtpeft.config import load_config
    from mtpeft.errors import ConfigError

    try:
        return [entry.label for entry in load_config(run_dir / "config.yaml").tasks]
    except (ConfigError, OSError):
        return None


# ---- a study's runs ------------------------------------------------------------------------------------
def study_signals(runs: StudyRuns, arm: Arm) -> dict[str, Signal]:
    """The cheap signals every multi-task run of the arm measured, each pair averaged over the runs
    holding it (every seed, every group); only the kinds some run measured."""
    found: dict[str, tuple[list[dict[str, Any]], list[str]]] = {AFFINITY: ([], []), COSINE: ([], [])}
    for group in runs.groups(arm):
        if len(group) < 2:
            continue
        for seed, record in sorted(runs.runs(arm, group).items()):
            for kind, key in ((AFFINITY, "affinity"), (COSINE, "grad_conflict")):
                summary = record.details.get(key) or {}
                if summary.get("measurements"):
                    found[kind][0].append(summary)
                    found[kind][1].append(f"{' + '.join(group)} (seed {seed})")
    signals = {}
    for kind, (summaries, sources) in found.items():
        if summaries:
            read = affinity_signal if kind == AFFINITY else cosine_signal
            signals[kind] = read(summaries, "; ".join(sources), list(runs.tasks))
    return signals
