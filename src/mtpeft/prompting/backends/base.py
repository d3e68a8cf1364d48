"""The contract every prompting backend meets: chat prompts in, answers (or recorded failures) out.

Backends: `local.py` (a causal LM run with transformers and its chat template: generate and score) and
`openai_compat.py` (any OpenAI-compatible server through the `openai` client: generate only). The
runner (prompting/runner.py) only sees this protocol, so a new backend is one module plus its entry in
BACKENDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


Prompt = list[Message]  # one chat conversation; the last message is the user's question


@dataclass
class Answer:
    """One prompt's outcome. A failure is an Answer with `error` set, never a dropped example."""

    text: str | None  # the generated text (None when the request failed)
    tokens_in: int = 0  # prompt tokens as the backend counted them (after any truncation)
    tokens_out: int = 0  # generated tokens
    seconds: float = 0.0  # wall time of the request (its share of a batch, for local batches)
    truncated: bool = False  # the prompt was cut to fit the model's context
    error: str | None = None  # why no answer came back (after retries), e.g. "HTTP 503 after 4 tries"
    extra: dict = field(default_factory=dict)


@runtime_checkable
class PromptBackend(Protocol):
    name: str  # e.g. "local:smollm2-135m" or "openai:http://127.0.0.1:8080/v1#model"
    context_length: int  # tokens the model reads; prompts are truncated to fit (counted)

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt costs once rendered (chat template included); an estimate for servers."""
        ...

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int) -> list[Answer]:
        """Greedy answers, one per prompt, in order; failures are Answers with `error` set."""
        ...


@runtime_checkable
class ScoringBackend(PromptBackend, Protocol):
    """A backend that can also read the log-likelihood of given continuations (local models only)."""

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        """Sum of log-probabilities of each choice as the assistant's reply to each prompt:
        [len(prompts)][len(choices)] (as lm-evaluation-harness scores multiple choice)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled last hidden states of each text (the cheap code-search variant)."""
        ...
