"""What a task kind is: every piece of per-kind knowledge, behind one object.

A kind says which record roles its files fill, which of them the model encodes (each once per batch,
in the order given), how to build its head from the hidden size, how the head's outputs become
metrics and prediction rows, and which baselines it is compared with. Nothing here imports torch or
scikit-learn at module import: `mtpeft data ...` and `mtpeft study --dry-run` read kinds without them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtpeft.errors import ConfigError, shorten

if TYPE_CHECKING:
    import numpy as np

    from mtpeft.config import TaskEntry
    from mtpeft.data.example import Example
    from mtpeft.heads.base import TaskHead
    from mtpeft.prompting.templates import Conversation
    from mtpeft.tasks.spec import TaskSpec

# The TaskEntry field that bounds the tokens of each encoded role (a new role needs a line here).
MAX_LENGTH_FIELD: dict[str, str] = {"code": "max_length", "code_b": "max_length", "query": "max_query_length"}
PROMPT_TOKENS = 64  # a generous bound on an instruct prompt's own words (system message, question)
LABEL_WORD_TOKENS = 8  # and on a label word with its end token

Outputs = dict[str, Any]  # y_pred | scores | hypotheses, in example order (what write_predictions takes)
Rows = Iterable[dict[str, Any]]
Baseline = Callable[["TaskSpec", list["Example"], list["Example"], "np.random.Generator"], dict[str, Any]]


@dataclass
class TaskEvaluation:
    metrics: dict[str, float]
    outputs: Outputs
    per_example: dict[str, list]  # what a paired bootstrap needs


# How a task can be trained: `heads` (a small head on pooled backbone vectors) or `instruct` (the example
# becomes a prompt and the model's LM head learns to write the target: a label word, or a text).
FORMULATIONS = ("heads", "instruct")


class Kind(ABC):
    name: str
    record_roles: tuple[str, ...]  # Example fields every record must fill (`label` included)
    inputs: tuple[str, ...]  # roles the model encodes, in encoding order
    labelled: bool = False  # examples carry a label from the task's label set
    formulations: tuple[str, ...] = ("heads",)  # the ones this kind supports; the first is its default

    def formulation(self, spec: TaskSpec, chosen: str | None) -> str:
        """The formulation a run trains the task in (`chosen` from its config entry, None: the default)."""
        formulation = chosen or self.formulations[0]
        if formulation not in self.formulations:
            raise ConfigError(
                f"task {shorten(spec.name, 60)} is a {self.name} task, which trains in formulation "
                f"{' or '.join(self.formulations)}, not '{formulation}'",
                field="formulation",
            )
        return formulation

    def prompt(self, spec: TaskSpec, example: Example) -> Conversation:
        """The conversation asking for the example's target (formulation instruct)."""
        raise NotImplementedError(f"kind {self.name} has no instruct formulation")

    def target(self, spec: TaskSpec, example: Example) -> str:
        """The text the model learns to answer `prompt` with."""
        raise NotImplementedError(f"kind {self.name} has no instruct formulation")

    def choices(self, spec: TaskSpec) -> list[str] | None:
        """The answer words of each label index, where the answer is one of a set; None: free text."""
        return None

    def check(self, spec: TaskSpec) -> None:
        """Raise ValueError when a task declaration does not fit this kind."""
        if self.labelled and not spec.labels:
            raise ValueError(f"task {shorten(spec.name, 60)} of kind {self.name} needs a 'labels' list")

    def max_tokens(self, entry: TaskEntry) -> int:
        """Tokens one example feeds the backbone with every input padded to its maximum (an upper bound;
        in instruct form the prompt's own words and the answer come on top of the code)."""
        code = sum(getattr(entry, MAX_LENGTH_FIELD[role]) for role in self.inputs)
        if entry.formulation == "instruct" or "heads" not in self.formulations:
            answer = LABEL_WORD_TOKENS if self.labelled else entry.max_target_length
            return code + PROMPT_TOKENS + answer
        return code

    @property
    def trainable(self) -> bool:
        return type(self).build_head is not Kind.build_head or "instruct" in self.formulations

    def build_head(self, spec: TaskSpec, hidden_size: int, options: dict[str, Any]) -> TaskHead:
        """The task's head; imports torch. A kind without one trains through the LM head, if at all."""
        from mtpeft.tasks.kinds import KINDS

        with_heads = ", ".join(sorted(n for n, kind in KINDS.items() if "heads" in kind.formulations))
        how = f"formulation {' or '.join(self.formulations)}" if self.trainable else "no way yet"
        raise ConfigError(
            f"task {shorten(spec.name, 60)} has kind '{self.name}', which has no head (kinds with heads: "
            f"{with_heads}); "
            f"it trains in {how}",
            field="tasks",
        )

    @abstractmethod
    def score(self, spec: TaskSpec, outputs: dict[str, Any], examples: list[Example]) -> TaskEvaluation:
        """Metrics from the head's stacked outputs (tensors, in example order)."""

    @abstractmethod
    def gold(self, examples: list[Example]) -> dict[str, Any]:
        """The reference side of compute_metrics for these examples."""

    @abstractmethod
    def prediction_rows(self, spec: TaskSpec, examples: list[Example], outputs: Outputs) -> Rows:
        """One row per example for the generic predictions file (its own gold included)."""

    @abstractmethod
    def baselines(self) -> dict[str, Baseline]:
        """Baselines scored beside the model, by name."""
