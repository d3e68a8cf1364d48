"""Pair classification (clone detection): a label for two snippets.

The pair is bi-encoded: each snippet is its own backbone pass (so each gets the full max_length) and
the head sees [u, v, |u - v|, u * v] (Sentence-BERT style; heads/classification.py). Baselines:
majority, random, and logistic regression on TF-IDF cosine, length ratio and identifier overlap.
"""

from __future__ import annotations

from mtpeft.tasks.kinds.base import Baseline
from mtpeft.tasks.kinds.classification import ClassificationKind


class PairKind(ClassificationKind):
    record_roles = ("code", "code_b", "label")
    inputs = ("code", "code_b")

    def baselines(self) -> dict[str, Baseline]:
        from mtpeft.evaluation import baselines

        return super().baselines() | {"tfidf": baselines.tfidf_pair_classifier}


PAIR = PairKind("pair")
