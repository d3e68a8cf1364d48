"""Fit a conversation into the model's context by cutting its code, never its instructions or question.

Every code part (the query's and the few-shot examples') is cut to one common length, the largest that
fits ("water filling"): long snippets lose their tails, short ones stay whole, and the query is never
starved by its shots. The token count comes from the backend (its chat template and tokenizer), so the
fit is exact for local models and an estimate for servers. A conversation whose text alone exceeds the
budget is returned with every code part cut to nothing and still over budget: the backend then cuts
tokens itself and reports the prompt as truncated.
"""

from __future__ import annotations

from collections.abc import Callable

from mtpeft.prompting.backends.base import Prompt
from mtpeft.prompting.templates import Code, Conversation, render

MAX_ROUNDS = 8  # each round recounts tokens once; the estimate converges in two or three
SAFETY = 1.05  # cut 5% more characters than the token excess suggests, so one round usually does


def code_lengths(conversation: Conversation) -> list[int]:
    return [len(part.text) for turn in conversation for part in turn.parts if isinstance(part, Code)]


def water_level(lengths: list[int], total: float) -> int:
    """The largest cap c with sum(min(length, c)) <= total."""
    remaining = max(total, 0.0)
    ordered = sorted(lengths)
    for position, length in enumerate(ordered):
        left = len(ordered) - position
        if length * left > remaining:
            return int(remaining // left)
        remaining -= length
    return max(ordered, default=0)


def fit(conversation: Conversation, count: Callable[[Prompt], int], budget: int) -> tuple[Prompt, bool, int]:
    """(prompt, truncated, tokens): the conversation rendered within `budget` tokens where possible."""
    prompt, _ = render(conversation)
    tokens = count(prompt)
    lengths = code_lengths(conversation)
    if tokens <= budget or not lengths:
        return prompt, False, tokens
    cap = max(lengths)
    for _ in range(MAX_ROUNDS):
        chars_per_token = sum(len(m["content"]) for m in prompt) / max(tokens, 1)
        kept = sum(min(length, cap) for length in lengths)
        target = kept - (tokens - budget) * chars_per_token * SAFETY
        new_cap = water_level(lengths, target) if target > 0 else 0
        cap = min(new_cap, int(cap * 0.9))  # always progress, even where the estimate stalls
        prompt, _ = render(conversation, cap)
        tokens = count(prompt)
        if tokens <= budget or cap == 0:
            break
    return prompt, True, tokens
