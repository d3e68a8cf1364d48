"""Generation (summarisation, repair): a text per snippet, scored against the reference target.

Trained through the model's language-model head (formulation `instruct`, the only one): the prompt is
the task's `instruction` and the code, the target the reference text (modeling/lm_inputs.py); evaluation
generates (MultiTaskModel.generate) and scores the hypotheses with the task's metrics. Baselines: the
most frequent train target, a random train target, the nearest train example's target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtpeft.tasks.kinds.base import Baseline, Kind, Outputs, Rows, TaskEvaluation

if TYPE_CHECKING:
    from mtpeft.data.example import Example
    from mtpeft.prompting.templates import Conversation
    from mtpeft.tasks.spec import TaskSpec

# For a task YAML without `instruction:`; the built-in tasks each give their own.
DEFAULT_INSTRUCTION = "Write what the task asks for, for this code."


class GenerationKind(Kind):
    name = "generation"
    record_roles = ("code", "target")
    inputs = ("code",)
    formulations = ("instruct",)

    def prompt(self, spec: TaskSpec, example: Example) -> Conversation:
        # The zero-shot prompt `mtpeft prompt` asks (one definition): a tuned run starts from it.
        from mtpeft.prompting.templates import template_for

        return template_for(spec).conversation(example, [])

    def target(self, spec: TaskSpec, example: Example) -> str:
        return example.target or ""

    def score(self, spec: TaskSpec, outputs: dict[str, Any], examples: list[Example]) -> TaskEvaluation:
        from mtpeft.evaluation.metrics import compute_metrics

        hypotheses = list(outputs["hypotheses"])
        references = self.gold(examples)["references"]
        metrics = compute_metrics(spec.metrics, references=references, hypotheses=hypotheses)
        return TaskEvaluation(
            metrics, {"hypotheses": hypotheses}, {"references": references, "hypotheses": hypotheses}
        )

    def gold(self, examples: list[Example]) -> dict[str, Any]:
        return {"references": [e.target or "" for e in examples]}

    def prediction_rows(self, spec: TaskSpec, examples: list[Example], outputs: Outputs) -> Rows:
        pairs = zip(examples, outputs["hypotheses"], strict=True)
        return ({"id": e.id, "reference": e.target, "hypothesis": h} for e, h in pairs)

    def baselines(self) -> dict[str, Baseline]:
        from mtpeft.evaluation import baselines

        return {
            "majority": baselines.majority_target,
            "random": baselines.random_target,
            "tfidf": baselines.nearest_neighbour_target,
            "copy": baselines.copy_input,
        }


GENERATION = GenerationKind()
