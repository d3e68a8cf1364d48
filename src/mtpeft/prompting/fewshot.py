"""Few-shot examples: the K train examples nearest to the query by BM25 (bm25s), as prior turns.

Similarity is over identifier sub-tokens (`parseHTTPResponse` -> parse, http, response), of the code for
classification, of both snippets for pairs, and of the query text for code search (the test query's code
is the hidden answer there, so only its words can be matched). An example whose content equals the
query's (the query itself, or a copy leaked into train) is never picked. The nearest example comes last,
right before the question. For code search every second shot is made a mismatch (its query with another
shot's code, answered "no"), so the shots do not teach the model to always say yes.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from mtpeft.data.example import Example

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_SUBTOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def tokens(text: str) -> list[str]:
    """Lower-cased identifier parts (the same split as the TF-IDF baseline's text vectorizer)."""
    return [part.lower() for ident in _IDENTIFIER.findall(text) for part in _SUBTOKEN.findall(ident)]


def _text(example: Example, kind: str) -> str:
    if kind == "retrieval":
        return example.query or ""
    if kind == "pair":
        return f"{example.code}\n{example.code_b or ''}"
    return example.code


def _content(example: Example, kind: str) -> tuple[str, ...]:
    """What makes two examples the same for exclusion (whitespace ignored)."""

    def flat(text: str | None) -> str:
        return " ".join((text or "").split())

    if kind == "pair":
        return tuple(sorted((flat(example.code), flat(example.code_b))))
    if kind == "retrieval":
        return (flat(example.query),)
    return (flat(example.code),)


class ShotPicker:
    """BM25 index over a task's train examples; `pick` returns the K nearest to a query example."""

    def __init__(self, train: list[Example], kind: str) -> None:
        import bm25s  # imported here: only few-shot runs need it

        self.train = train
        self.kind = kind
        self._contents = [_content(e, kind) for e in train]
        self._index = bm25s.BM25()
        self._index.index([tokens(_text(e, kind)) or ["<empty>"] for e in train], show_progress=False)

    def pick(self, query: Example, k: int) -> list[Example]:
        """The k nearest train examples, nearest last; never one equal to `query`."""
        if k <= 0 or not self.train:
            return []
        words = [w for w in tokens(_text(query, self.kind)) if w in self._index.vocab_dict]
        scores = self._index.get_scores(words) if words else np.zeros(len(self.train))
        own = _content(query, self.kind)
        chosen: list[Example] = []
        for i in np.argsort(-np.asarray(scores), kind="stable"):  # ties: file order, deterministic
            if self._contents[i] != own:
                chosen.append(self.train[i])
                if len(chosen) == k:
                    break
        chosen.reverse()
        return mismatched(chosen) if self.kind == "retrieval" else chosen


def mismatched(shots: list[Example]) -> list[Example]:
    """Code-search shots labelled 1 (match), every second one turned into a mismatch labelled 0: its
    query with the code of the shot after it (counted from the nearest, which stays a match)."""
    out = []
    for position, shot in enumerate(reversed(shots)):  # from the nearest
        partner = shots[-1 - (position + 1) % len(shots)]
        if position % 2 == 1 and " ".join(partner.code.split()) != " ".join(shot.code.split()):
            out.append(replace(shot, code=partner.code, label=0))
        else:
            out.append(replace(shot, label=1))
    return list(reversed(out))
