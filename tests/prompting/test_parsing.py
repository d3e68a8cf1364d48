"""Reading generated answers: decorated answers parse, look-alike words do not, nothing raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtpeft.prompting.parsing import parse_answer

YES_NO = ("no", "yes")
COMPLEXITY = ("O(1)", "O(log n)", "O(n)", "O(n log n)", "O(n^2)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", 1),
        ("yes.", 1),
        ("Yes.", 1),
        ("**No**", 0),
        ("`no`", 0),
        ("Answer: yes", 1),
        ("answer:no", 0),
        ("The answer is: No.", 0),
        ("  \n YES!", 1),
        ('"yes"', 1),
        ("> No, it does not.", 0),
        ("True", 1),
        ("false.", 0),
        ("No. Yes would be wrong.", 0),  # the first label word
        ("It has no bug. Final answer: yes", 1),  # an explicit answer marker wins
        ("### Answer\n**Yes**", 1),
    ],
)
def test_decorated_yes_no_answers_parse(text, expected):
    assert parse_answer(text, YES_NO) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "I cannot tell.",
        "nothing to report",
        "I know",
        "not sure",
        "yesterday",
        "Nope",
        "maybe",
        "?",
    ],
)
def test_look_alikes_and_non_answers_are_unparseable(text):
    assert parse_answer(text, YES_NO) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("O(n log n)", 3),
        ("The complexity is O(n log n).", 3),
        ("o(n)", 2),
        ("**O(n^2)**", 4),
        ("Answer: O(log n)", 1),
        ("constant time, O(1)", 0),
    ],
)
def test_multiclass_words_longest_match_wins(text, expected):
    assert parse_answer(text, COMPLEXITY) == expected


def test_true_false_only_stand_for_yes_no():
    assert parse_answer("true", ("low", "high")) is None


_PREFIXES = ["", "Answer: ", "answer:", "The answer is ", "Final answer: ", "**", "`", "> ", "  \n"]
_SUFFIXES = ["", ".", "!", "**", "`", ".\n\nThe code reads a file.", " - see line 3.", ":"]
_CASES = [str.lower, str.upper, str.title, lambda s: s]


@pytest.mark.fuzz
@given(
    index=st.integers(0, 1),
    prefix=st.sampled_from(_PREFIXES),
    suffix=st.sampled_from(_SUFFIXES),
    case=st.sampled_from(_CASES),
)
def test_any_decoration_of_a_label_word_parses_to_it(index, prefix, suffix, case):
    assert parse_answer(prefix + case(YES_NO[index]) + suffix, YES_NO) == index


@pytest.mark.fuzz
@given(index=st.integers(0, 4), prefix=st.sampled_from(_PREFIXES), suffix=st.sampled_from(_SUFFIXES))
def test_any_decoration_of_a_complexity_word_parses_to_it(index, prefix, suffix):
    assert parse_answer(prefix + COMPLEXITY[index] + suffix, COMPLEXITY) == index


@pytest.mark.fuzz
@given(text=st.text(max_size=200))
def test_parsing_never_raises_and_returns_a_label_or_none(text):
    assert parse_answer(text, YES_NO) in (None, 0, 1)
    assert parse_answer(text, COMPLEXITY) in (None, 0, 1, 2, 3, 4)


@pytest.mark.fuzz
@given(text=st.text(alphabet="abcdfghijklmpqrsuvwxz 0123456789,.!?\n", max_size=80))
def test_text_without_the_words_is_unparseable(text):
    assert parse_answer(text, YES_NO) is None  # no 'e', 'o' or 't': neither yes/no nor true/false
