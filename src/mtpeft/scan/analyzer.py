"""The interface between the scanner and a trained run: the :class:`Analyzer` protocol.

The scanner never imports a model. Whatever implements this protocol (the run loader, or a fake in
tests) answers questions about code snippets; the scanner decides which snippets to ask about, in
what batches, and what to report.

Answers are ``(label, probability)`` pairs, or mappings with those two keys (what ``mtpeft.load``'s
run returns, with ``probabilities`` besides): the predicted label (one of the task's ``labels``) and
the probability the model gives THAT label. For a binary task the probability of the positive
class follows from it (see :func:`positive_probability`).

Which task applies to which unit (:func:`default_applies_to`), unless the analyzer's
:class:`TaskSpec` says otherwise with ``applies_to``:

- binary and multiclass tasks whose name or base task mentions "flaky" or "test": test units only;
- other binary and multiclass tasks (vulnerability, defects, complexity): functions and methods,
  not tests (test code is not shipped code);
- pair tasks (clone detection): no unit; they confirm clone candidates through ``compare``;
- retrieval and generation tasks: no unit (the scanner asks nothing of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

PER_UNIT_KINDS = ("binary", "multiclass")
_TEST_WORDS = ("flaky", "test")
_TWO_CLASS_KINDS = ("binary", "pair")  # a pair task is a binary question about two snippets


class Answer(NamedTuple):
    """One task's answer for one snippet; a plain ``(label, probability)`` tuple is accepted too."""

    label: str
    probability: float  # of ``label``, in [0, 1]


@dataclass(frozen=True)
class TaskSpec:
    """What the scanner needs to know about one task of the run.

    ``name`` is the run's task name (``vuln-chrome``); ``base`` the built-in task it instantiates
    (``vulnerability``), used only to decide applicability and wording. ``positive_labels`` are the
    labels that make a unit a finding; for a binary or pair task they default to the last label
    (``"1"``), for other kinds to none (the answers are reported, no finding is raised).
    """

    name: str
    kind: str  # binary | multiclass | pair | retrieval | generation
    labels: tuple[str, ...] = ()
    base: str = ""
    description: str = ""
    applies_to: frozenset[str] | None = None  # unit kinds; None: default_applies_to(...)
    positive_labels: frozenset[str] | None = None

    @property
    def unit_kinds(self) -> frozenset[str]:
        return self.applies_to if self.applies_to is not None else default_applies_to(self)

    @property
    def positives(self) -> frozenset[str]:
        if self.positive_labels is not None:
            return self.positive_labels
        if self.kind in _TWO_CLASS_KINDS and self.labels:
            return frozenset({self.labels[-1]})
        return frozenset()


def default_applies_to(task: TaskSpec) -> frozenset[str]:
    if task.kind not in PER_UNIT_KINDS:
        return frozenset()
    words = f"{task.name} {task.base}".lower()
    if any(word in words for word in _TEST_WORDS):
        return frozenset({"test"})
    return frozenset({"function", "method"})


def positive_probability(task: TaskSpec, answer: Answer) -> float | None:
    """Probability that the unit is a finding for ``task``; None when the task raises no findings.

    Binary and pair: P(positive), from the answer whichever label won. Multiclass: the answer's probability
    when its label is one of ``positive_labels``, else 0.
    """
    positives = task.positives
    if not positives:
        return None
    if answer.label in positives:
        return float(answer.probability)
    if task.kind in _TWO_CLASS_KINDS:
        return 1.0 - float(answer.probability)
    return 0.0


@runtime_checkable
class Analyzer(Protocol):
    """A trained run as the scanner uses it. Every method is called with batches, never one by one.

    ``max_tokens`` is passed to every call: the model truncates each snippet to that many tokens, or, when
    it is None, to each task's own limit from training (the scanner only counts how many were truncated,
    with ``count_tokens``, against ``max_tokens`` or the analyzer's own ``max_tokens``).
    """

    @property
    def tasks(self) -> Mapping[str, TaskSpec]:
        """The run's tasks by name, in the run's order."""
        ...

    @property
    def max_tokens(self) -> int:
        """The token limit the run was trained with (the smallest, when its tasks differ): a unit over it is
        truncated for at least one task. What a scan counts truncated units against by default."""
        ...

    @property
    def info(self) -> Mapping[str, str]:
        """Free-form facts shown in reports: run directory, model, method, ... (may be empty)."""
        ...

    def count_tokens(self, codes: Sequence[str]) -> list[int]:
        """Tokens of each snippet with the run's tokenizer, before truncation."""
        ...

    def analyze(
        self, codes: Sequence[str], tasks: Sequence[str], *, max_tokens: int | None
    ) -> list[Mapping[str, Answer | Mapping[str, object]]]:
        """For each snippet, one answer per requested task (binary/multiclass tasks only).

        Labels must be among the task's ``labels``, probabilities in [0, 1]; scan_tree checks both.
        """
        ...

    def embed(self, codes: Sequence[str], *, max_tokens: int | None) -> np.ndarray:
        """One vector per snippet, shape (len(codes), dim); the scanner normalises them itself."""
        ...

    def compare(
        self, a: Sequence[str], b: Sequence[str], task: str, *, max_tokens: int | None
    ) -> list[Answer | Mapping[str, object]]:
        """For each pair ``(a[i], b[i])``, the answer of the pair task ``task`` (clone: "1" = clones)."""
        ...


def as_answer(value: Answer | tuple[str, float] | Mapping[str, object]) -> Answer:
    if isinstance(value, Mapping):
        return Answer(str(value["label"]), float(value["probability"]))  # type: ignore[arg-type]
    label, probability = value
    return Answer(str(label), float(probability))
