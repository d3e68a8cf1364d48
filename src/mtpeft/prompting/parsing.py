"""Read a generated answer as one of the task's answer words, or as unparseable (None).

Models decorate answers: "Yes.", "**No**", "Answer: yes", "The answer is O(n log n).", "`no` - because".
The rule: case and Markdown emphasis are ignored; a label word counts only as a whole word (so "no" is
not read out of "not" or "know"); after an explicit answer marker ("answer:", "the answer is", "label:")
the first word there wins, else the first label word of the whole text. When two words start at the same
place the longer wins ("O(n log n)" over "O(n)"). For yes/no questions "true"/"false" count as yes/no.
Anything else is unparseable: the runner counts it and scores it as wrong, never as a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Markdown and quoting around an answer; replaced by spaces in the text and in the words alike.
_MARKUP = re.compile(r"[*`#>\"'\u201c\u201d\u2018\u2019]")
_SPACE = re.compile(r"\s+")
_MARKER = re.compile(
    r"(?<!\w)(?:final answer|answer|label|classification|verdict|output)\s*(?:is\s*)?(?::|=|-|is)?\s*"
)
_SYNONYMS = {"yes": ("true",), "no": ("false",)}


def normalise(text: str) -> str:
    return _SPACE.sub(" ", _MARKUP.sub(" ", text.casefold())).strip()


def _forms(words: Sequence[str]) -> list[tuple[str, int]]:
    """(normalised form, label index) for every word and its synonyms, longest first."""
    forms = [(normalise(word), index) for index, word in enumerate(words)]
    plain = {form for form, _ in forms}
    for form, index in list(forms):
        forms += [(s, index) for s in _SYNONYMS.get(form, ()) if s not in plain and {"yes", "no"} <= plain]
    return sorted(forms, key=lambda item: -len(item[0]))


def _first(text: str, forms: list[tuple[str, int]]) -> int | None:
    best: tuple[int, int] | None = None  # (position, label index)
    for form, index in forms:  # longest first: at equal positions the longer form is kept
        if not form:
            continue
        match = re.search(rf"(?<!\w){re.escape(form)}(?!\w)", text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), index)
    return None if best is None else best[1]


def parse_answer(text: str | None, words: Sequence[str]) -> int | None:
    """The label index the answer names, or None when it names none of `words`."""
    if not text:
        return None
    norm = normalise(text)
    forms = _forms(words)
    markers = list(_MARKER.finditer(norm))
    if markers:
        found = _first(norm[markers[-1].end() :], forms)
        if found is not None:
            return found
    return _first(norm, forms)
