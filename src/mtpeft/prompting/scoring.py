"""Answers -> predictions -> the task's metrics, 95% bootstrap intervals, counts and cost.

Nothing is dropped: an unparseable answer (generate mode) and a failed request (Answer.error, counted as
unanswered) are scored as WRONG, i.e. as the other answer: a wrong label for classification (the next
label), and for a code-search candidate "no" to the true code and "yes" to any other. So every example
of the subset is in every metric, and a model that cannot follow the format loses for it.
A generation task's reply is its hypothesis as written (stripped); a failed request is an empty one.
Score mode reads the label whose words are most likely; each word counts in two spellings ("yes" and
"Yes": chat models open their reply capitalised), their probabilities added (logsumexp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mtpeft.evaluation.metrics import bootstrap_ci, compute_metrics
from mtpeft.prompting.answers import AnswerRecord
from mtpeft.prompting.config import GENERATE
from mtpeft.prompting.parsing import parse_answer
from mtpeft.prompting.retrieval import rank_of_true
from mtpeft.prompting.templates import NO, YES

BOOTSTRAP_RESAMPLES = 1000  # as evaluation/on_data.py and study/stats.py: one interval recipe
YES_INDEX, NO_INDEX = 1, 0  # code-search answer words: (no, yes), as templates.Template.words
SEARCH_WORDS = (NO, YES)


@dataclass
class Counts:
    examples: int = 0  # test examples (code search: queries)
    prompts: int = 0  # prompts asked (code search: one per query and candidate)
    unparseable: int = 0  # generate mode: answers naming no answer word (scored wrong)
    truncated: int = 0  # prompts whose code was cut to fit the context
    unanswered: int = 0  # requests that failed (Answer.error), scored wrong

    def add(self, record: AnswerRecord, *, unparseable: bool = False) -> None:
        self.prompts += 1
        self.truncated += int(record.truncated)
        self.unanswered += int(not record.answered)
        self.unparseable += int(unparseable)


@dataclass
class TaskResult:
    task: str
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    per_example: dict[str, list]
    counts: Counts
    cost: dict[str, float] = field(default_factory=dict)
    protocol: str | None = None  # how code search was ranked (pool rerank or whole-split cosine)


def score_choices(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """The strings scored and the label index each belongs to: every word as written and capitalised."""
    choices, owners = [], []
    for index, word in enumerate(words):
        for variant in dict.fromkeys((word, word[:1].upper() + word[1:])):
            choices.append(variant)
            owners.append(index)
    return choices, owners


def label_scores(scores: Sequence[float], owners: Sequence[int], n_labels: int) -> list[float]:
    """Per label: log of the summed probability of its spellings."""
    grouped: list[list[float]] = [[] for _ in range(n_labels)]
    for value, owner in zip(scores, owners, strict=True):
        grouped[owner].append(value)
    return [float(np.logaddexp.reduce(values)) if values else -math.inf for values in grouped]


SEARCH_CHOICES, SEARCH_OWNERS = score_choices(SEARCH_WORDS)


def read_label(record: AnswerRecord, mode: str, words: Sequence[str], owners: Sequence[int]) -> int | None:
    """The label an answer names (None: unparseable or failed)."""
    if not record.answered:
        return None
    if mode == GENERATE:
        return parse_answer(record.text, words)
    values = label_scores(record.scores or [], owners, len(words))
    return int(np.argmax(values))


def cost_of(records: Sequence[AnswerRecord]) -> dict[str, float]:
    return {
        "tokens_in": float(sum(r.tokens_in for r in records)),
        "tokens_out": float(sum(r.tokens_out for r in records)),
        "seconds": float(sum(r.seconds for r in records)),
    }


def _finish(
    task: str,
    metrics: list[str],
    per_example: dict[str, list],
    counts: Counts,
    records: Sequence[AnswerRecord],
) -> TaskResult:
    values = compute_metrics(metrics, **per_example)
    intervals = bootstrap_ci(metrics, per_example, n=BOOTSTRAP_RESAMPLES)
    return TaskResult(task, values, intervals, per_example, counts, cost_of(records))


def score_labels(
    task: str,
    metrics: list[str],
    records: Sequence[AnswerRecord],
    gold: Sequence[int],
    *,
    mode: str,
    words: Sequence[str],
) -> TaskResult:
    """Classification and pair tasks: one record per example, in example order."""
    _, owners = score_choices(words)
    counts = Counts(examples=len(gold))
    y_pred = []
    for record, truth in zip(records, gold, strict=True):
        label = read_label(record, mode, words, owners)
        counts.add(record, unparseable=record.answered and label is None)
        y_pred.append(label if label is not None else (truth + 1) % len(words))  # scored as wrong
    return _finish(task, metrics, {"y_true": list(gold), "y_pred": y_pred}, counts, records)


def score_texts(
    task: str, metrics: list[str], records: Sequence[AnswerRecord], references: Sequence[str]
) -> TaskResult:
    """Generation tasks: each reply (stripped) is the hypothesis; a failed request scores as an empty one."""
    counts = Counts(examples=len(references))
    hypotheses = []
    for record in records:
        counts.add(record)
        hypotheses.append((record.text or "").strip() if record.answered else "")
    per_example = {"references": list(references), "hypotheses": hypotheses}
    return _finish(task, metrics, per_example, counts, records)


def candidate_value(record: AnswerRecord, mode: str, *, true: bool) -> tuple[float, bool]:
    """(how strongly the model says the candidate matches, unparseable); wrong answers as the other one."""
    if mode == GENERATE:
        label = read_label(record, mode, SEARCH_WORDS, SEARCH_OWNERS)
        unparseable = record.answered and label is None
        if label is None:  # unparseable or failed: scored as the wrong word
            label = NO_INDEX if true else YES_INDEX
        return float(label == YES_INDEX), unparseable
    if not record.answered:
        return (-math.inf if true else math.inf), False
    values = label_scores(record.scores or [], SEARCH_OWNERS, 2)
    return values[YES_INDEX] - values[NO_INDEX], False  # log-odds: comparable across candidates


def score_pools(
    task: str, metrics: list[str], pools: Sequence[Sequence[AnswerRecord]], *, mode: str
) -> TaskResult:
    """Code-search rerank: per query, its candidates' records with the true code first."""
    counts = Counts(examples=len(pools))
    ranks = []
    for records in pools:
        values = []
        for position, record in enumerate(records):
            value, unparseable = candidate_value(record, mode, true=position == 0)
            counts.add(record, unparseable=unparseable)
            values.append(value)
        ranks.append(rank_of_true(values))
    flat = [r for records in pools for r in records]
    return _finish(task, metrics, {"ranks": ranks}, counts, flat)


def score_ranks(
    task: str, metrics: list[str], ranks: Sequence[int], counts: Counts, cost: dict
) -> TaskResult:
    """Code search by embeddings: ranks already computed over the whole split."""
    per_example = {"ranks": [int(r) for r in ranks]}
    result = _finish(task, metrics, per_example, counts, [])
    result.cost = cost
    return result
