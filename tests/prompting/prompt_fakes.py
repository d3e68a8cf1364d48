"""A scripted prompting backend and fixture data, for tests where the model is not the point."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from mtpeft.data.fixtures import FIXTURE_TASKS, MARKER, write_fixture_dataset
from mtpeft.prompting.backends.base import Answer, Prompt
from mtpeft.prompting.config import PromptConfig


def question(prompt: Prompt) -> str:
    """The last user turn: the question about the item (shots come before it)."""
    return prompt[-1]["content"]


def truthful(prompt: Prompt) -> str:
    """Fixture binary tasks: label 1 exactly when the code holds MARKER."""
    return "**Yes.**" if MARKER in question(prompt) else "Answer: no"


class FakeBackend:
    """Implements ScoringBackend. `reply(prompt)` -> text, or an Exception instance for a failed answer;
    `likely(prompt, choice)` -> log-likelihood. Counts every prompt it is asked; `stop_after_calls`
    raises KeyboardInterrupt at that call, as a user's Ctrl-C would."""

    name = "fake"

    def __init__(
        self,
        reply: Callable[[Prompt], str | Exception] = truthful,
        likely: Callable[[Prompt, str], float] | None = None,
        *,
        context_length: int = 100_000,
        stop_after_calls: int | None = None,
    ) -> None:
        self.reply = reply
        self.likely = likely or (lambda p, c: float(c.lower() == ("yes" if MARKER in question(p) else "no")))
        self.context_length = context_length
        self.stop_after_calls = stop_after_calls
        self.calls = 0
        self.asked: list[Prompt] = []

    def count_tokens(self, prompt: Prompt) -> int:
        return sum(len(m["content"].split()) + 2 for m in prompt)

    def _call(self, prompts: Sequence[Prompt]) -> None:
        self.calls += 1
        if self.stop_after_calls is not None and self.calls > self.stop_after_calls:
            raise KeyboardInterrupt
        self.asked += list(prompts)

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int) -> list[Answer]:
        self._call(prompts)
        answers = []
        for prompt in prompts:
            text = self.reply(prompt)
            if isinstance(text, Exception):
                answers.append(Answer(None, tokens_in=self.count_tokens(prompt), error=str(text)))
            else:
                answers.append(Answer(text, self.count_tokens(prompt), 2, 0.01))
        return answers

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        self._call(prompts)
        return [[self.likely(p, c) for c in choices] for p in prompts]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Bags of hashed words: texts sharing words point the same way."""
        vectors = []
        for text in texts:
            vector = [0.0] * 64
            for word in text.lower().replace("_", " ").split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
            vectors.append(vector)
        return vectors


class GenerateOnly:
    """A PromptBackend that cannot score (as an OpenAI-compatible server)."""

    name = "generate-only"
    context_length = 100_000

    def __init__(self) -> None:
        self.inner = FakeBackend()

    def count_tokens(self, prompt: Prompt) -> int:
        return self.inner.count_tokens(prompt)

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int) -> list[Answer]:
        return self.inner.generate(prompts, max_new_tokens=max_new_tokens)


def fixture_task(root: Path, fmt: str = "devign-jsonl", n: int = 16) -> dict[str, str]:
    """A `tasks:` entry for the fixture dataset of a format (its built-in task, its data folder)."""
    return {"task": FIXTURE_TASKS[fmt], "data": str(write_fixture_dataset(fmt, root / "data", n_per_split=n))}


def config(root: Path, *tasks: dict[str, str], **fields) -> PromptConfig:
    """A prompting config over fixture tasks in `root/ws`, one prompt per backend chunk by default."""
    base = {
        "model": "fake",
        "workspace": str(root / "ws"),
        "mode": "generate",
        "batch_size": 1,
        "concurrency": 1,
    }
    return PromptConfig(tasks=list(tasks) or [fixture_task(root)], **(base | fields))
