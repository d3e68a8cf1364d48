"""The scan result every output format reads, and how answers become findings.

A finding is one (unit, task) whose positive-class probability (analyzer.positive_probability)
reaches the ``note`` threshold. Its level, the same in every format:

=========  ===========================  ======================================
level      default threshold on P       meaning
=========  ===========================  ======================================
error      P >= 0.9                     the model is confident
warning    0.7 <= P < 0.9
note       0.5 <= P < 0.7               more likely than not
(none)     P < 0.5                      not reported as a finding
=========  ===========================  ======================================

The thresholds are a :class:`Thresholds` value (``Thresholds.parse("0.9,0.7,0.5")`` for a
command-line option). ``per_task`` replaces the three levels of some tasks by one cut each (what
``mtpeft scan --precision`` chose on the run's validation split): at or above it a finding is an
error, below it there is none. Tasks without positive labels (complexity, by default) raise no
findings; their answers are still in the JSON and HTML reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mtpeft.scan.analyzer import Answer, TaskSpec, positive_probability
from mtpeft.scan.clones import ClonePair
from mtpeft.scan.units import CodeUnit, SkippedFile

LEVELS = ("error", "warning", "note")


@dataclass(frozen=True)
class Thresholds:
    error: float = 0.9
    warning: float = 0.7
    note: float = 0.5
    per_task: Mapping[str, float] = field(default_factory=dict)  # task -> its one cut (level error)

    def __post_init__(self) -> None:
        if not 0.0 <= self.note <= self.warning <= self.error <= 1.0:
            raise ValueError(f"thresholds must satisfy 0 <= note <= warning <= error <= 1, got {self}")

    def for_task(self, task: str | None) -> Thresholds:
        """The levels that apply to `task`: its own cut where it has one, else the three levels."""
        if task is not None and task in self.per_task:
            cut = self.per_task[task]
            return Thresholds(cut, cut, cut)
        return Thresholds(self.error, self.warning, self.note)

    @classmethod
    def parse(cls, text: str) -> Thresholds:
        """From the command line: ``"0.9,0.7,0.5"`` (error, warning, note)."""
        try:
            error, warning, note = (float(part) for part in text.split(","))
        except ValueError:
            example = "expected three numbers 'error,warning,note', e.g. 0.9,0.7,0.5"
            raise ValueError(f"thresholds {text!r}: {example}") from None
        return cls(error, warning, note)

    def level(self, probability: float | None) -> str | None:
        if probability is None:
            return None
        for name in LEVELS:
            if probability >= getattr(self, name):
                return name
        return None


@dataclass(frozen=True)
class Finding:
    unit_index: int
    unit: CodeUnit
    task: TaskSpec
    answer: Answer
    probability: float  # of the positive class
    level: str


@dataclass
class ScanResult:
    root: Path
    units: list[CodeUnit]
    answers: list[dict[str, Answer]]  # parallel to units: the tasks that applied to each unit
    tasks: dict[str, TaskSpec]  # the tasks this scan asked (per-unit and pair)
    clone_pairs: list[ClonePair] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # indices of units longer than max_tokens
    max_tokens: int = 0
    files: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, and "total"
    notes: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)  # the analyzer's facts (run, model, ...)
    clone_task: str | None = None  # the pair task that confirmed near-miss clones
    # Units beyond the run's out-of-distribution threshold (index -> OOD score): "unlike the training
    # data", reported as a note instead of their task findings unless include_unfamiliar.
    unfamiliar: dict[int, float] = field(default_factory=dict)
    include_unfamiliar: bool = False

    def findings(self, thresholds: Thresholds | None = None) -> list[Finding]:
        """Every (unit, task) at or above the note threshold, by path, line and task name."""
        thresholds = thresholds or Thresholds()
        found = []
        for index, (unit, answers) in enumerate(zip(self.units, self.answers, strict=True)):
            if index in self.unfamiliar and not self.include_unfamiliar:
                continue  # the model's verdict on code unlike its training data is noise: a note instead
            for name, answer in answers.items():
                task = self.tasks[name]
                probability = positive_probability(task, answer)
                level = thresholds.for_task(name).level(probability)
                if level is not None and probability is not None:
                    found.append(Finding(index, unit, task, answer, probability, level))
        found.sort(key=lambda f: (f.unit.path, f.unit.start_line, f.unit.start_column, f.task.name))
        return found

    def clone_level(self, pair: ClonePair, thresholds: Thresholds | None = None) -> str:
        """Exact duplicates are notes; confirmed clones take the level of their probability."""
        if pair.exact or pair.probability is None:
            return "note"
        return (thresholds or Thresholds()).for_task(self.clone_task).level(pair.probability) or "note"

    def summary(self) -> list[str]:
        """Short lines for the end of any report."""
        kinds = {k: sum(1 for u in self.units if u.kind == k) for k in ("function", "method", "test")}
        exact = sum(1 for p in self.clone_pairs if p.exact)
        near = len(self.clone_pairs) - exact
        clones = f"{count_phrase(near, 'clone pair')}, {count_phrase(exact, 'exact duplicate')}"
        parts = ", ".join(count_phrase(n, kind) for kind, n in kinds.items())
        lines = [
            f"{count_phrase(self.files, 'file')}, {count_phrase(len(self.units), 'unit')} ({parts})",
            f"{count_phrase(len(self.skipped), 'file')} skipped",
            f"{count_phrase(len(self.truncated), 'function')} truncated to {self.max_tokens} tokens",
            clones,
        ]
        if self.unfamiliar:
            what = "findings included" if self.include_unfamiliar else "no findings reported for them"
            lines.append(f"{count_phrase(len(self.unfamiliar), 'unit')} unlike the training data ({what})")
        if "total" in self.timings:
            lines.append(f"{self.timings['total']:.1f} s")
        return lines + list(self.notes)

    def unfamiliar_notes(self, limit: int = 20) -> list[str]:
        """One note per unfamiliar unit (the first `limit`, by path and line), then how many more."""
        order = sorted(self.unfamiliar, key=lambda i: (self.units[i].path, self.units[i].start_line))
        notes = [
            f"{self.units[i].path}:{self.units[i].start_line} {self.units[i].name}: unlike the training "
            f"data (OOD score {self.unfamiliar[i]:.4g})"
            for i in order[:limit]
        ]
        if len(order) > limit:
            notes.append(f"... and {len(order) - limit} more unit(s) unlike the training data")
        return notes


def count_phrase(n: int, word: str) -> str:
    """ "1 file", "2 files"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
