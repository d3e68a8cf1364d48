"""One prompt template per task kind: the question a general LLM is asked, and the words it answers with.

A template builds a conversation of turns whose code stays a separate part (`Code`), so truncation can
cut the code and nothing else (truncation.py). Every kind is asked a closed question with a known set
of answer words, indexed like the task's labels:

- binary: "<code> Does this function contain a bug? Answer yes or no." (labels[1] -> yes, labels[0] -> no)
- pair:   two code blocks, then a yes/no question about them;
- multiclass: the code, the question, "Answer with exactly one of: <the label words>";
- retrieval: "Query: <text> <code> Does this function do what the query describes? Answer yes or no."
  (index 1 -> yes: the candidate matches; runner/retrieval rank candidates by it).

Generation tasks (summarization, repair) are asked the task's own `instruction` before the code, exactly
the prompt a fine-tuned run of the task learns from (tasks/kinds/generation.py), with no answer words:
the reply is the hypothesis, and a few-shot example is answered with its reference target.

The task YAML's optional `prompt:` (TaskSpec.prompt) overrides the system message, the question and the
label words; without it the system message carries the task's description.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtpeft.data.example import Example
from mtpeft.errors import ConfigError
from mtpeft.prompting.backends.base import Prompt
from mtpeft.tasks.spec import TaskSpec

YES, NO = "yes", "no"
ROLE = "You are an expert software engineer."
DEFAULT_QUESTIONS = {
    "binary": "Does this code have the property the task describes?",
    "pair": "Do these two pieces of code have the relation the task describes?",
    "multiclass": "Which label does the task give this code?",
    "retrieval": "Does this code do what the query describes?",
}
GENERATION = "generation"
PROMPTABLE_KINDS = (*DEFAULT_QUESTIONS, GENERATION)


@dataclass(frozen=True)
class Code:
    """Source code inside a turn: the only part truncation may cut."""

    text: str


Part = str | Code


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    parts: tuple[Part, ...]


Conversation = list[Turn]


def render_code(code: str) -> str:
    return f"```\n{code}\n```"


def render(conversation: Conversation, cap: int | None = None) -> tuple[Prompt, bool]:
    """The chat prompt, each code part cut to `cap` characters; and whether any part was cut."""
    cut = False
    messages: Prompt = []
    for turn in conversation:
        texts = []
        for part in turn.parts:
            if isinstance(part, Code):
                text = part.text
                if cap is not None and len(text) > cap:
                    text, cut = text[:cap].rstrip() + "\n... (truncated)", True
                texts.append(render_code(text))
            else:
                texts.append(part)
        messages.append({"role": turn.role, "content": "".join(texts)})
    return messages, cut


@dataclass(frozen=True)
class Template:
    kind: str
    system: str
    question: str
    words: tuple[str, ...]  # the answer word of each label index

    @property
    def instruction(self) -> str:
        if self.words == (NO, YES):
            return "Answer yes or no."
        return f"Answer with exactly one of: {', '.join(self.words)}."

    @property
    def generates(self) -> bool:
        """The reply is free text (a summary, a fixed method), not one of answer words."""
        return self.kind == GENERATION

    def ask(self, item: Example) -> Turn:
        """The user turn asking about one item (an example, or a retrieval query-candidate pair)."""
        if self.generates:  # the fine-tuned prompt (GenerationKind.prompt): instruction, then the code
            return Turn("user", (f"{self.question}\n\n", Code(item.code)))
        tail = f"\n\n{self.question} {self.instruction}"
        if self.kind == "pair":
            parts: tuple[Part, ...] = ("Code A:\n", Code(item.code), "\n\nCode B:\n", Code(item.code_b or ""))
        elif self.kind == "retrieval":
            parts = (f"Query: {item.query or ''}\n\nCode:\n", Code(item.code))
        else:
            parts = ("Code:\n", Code(item.code))
        return Turn("user", (*parts, tail))

    def answer(self, item: Example) -> Turn:
        """The assistant turn answering a few-shot example correctly."""
        if self.generates:
            return Turn("assistant", (item.target or "",))
        return Turn("assistant", (self.words[int(item.label or 0)],))

    def conversation(self, item: Example, shots: list[Example]) -> Conversation:
        """System message, each shot as a prior user/assistant exchange, then the question about `item`."""
        turns = [Turn("system", (self.system,))]
        for shot in shots:
            turns += [self.ask(shot), self.answer(shot)]
        return [*turns, self.ask(item)]


def template_for(spec: TaskSpec) -> Template:
    """The task's template: its kind's defaults, with the task YAML's `prompt:` over them."""
    if spec.kind not in PROMPTABLE_KINDS:
        raise ConfigError(
            f"task '{spec.name}' has kind '{spec.kind}', which cannot be prompted yet "
            f"(prompting supports: {', '.join(PROMPTABLE_KINDS)})",
            field="tasks",
        )
    override = spec.prompt
    if spec.kind == GENERATION:
        from mtpeft.tasks.kinds.generation import DEFAULT_INSTRUCTION

        return Template(GENERATION, system_message(spec), spec.instruction or DEFAULT_INSTRUCTION, ())
    return Template(
        kind=spec.kind,
        system=system_message(spec),
        question=(override.question if override and override.question else DEFAULT_QUESTIONS[spec.kind]),
        words=_words(spec),
    )


def system_message(spec: TaskSpec) -> str:
    """The task YAML's `prompt.system`, else a short role and the task's description (every kind)."""
    if spec.prompt and spec.prompt.system:
        return spec.prompt.system
    return f"{ROLE} Task: {spec.description.strip()}" if spec.description.strip() else ROLE


def _words(spec: TaskSpec) -> tuple[str, ...]:
    if spec.kind == "retrieval":
        return (NO, YES)
    labels = spec.labels or []
    if spec.prompt and spec.prompt.labels:
        return tuple(spec.prompt.labels[label] for label in labels)
    if spec.kind in ("binary", "pair"):  # two labels; index 1 is the positive class (metrics.POSITIVE)
        return (NO, YES)
    return tuple(labels)
