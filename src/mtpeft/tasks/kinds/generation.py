"""Generation (summarisation, repair): a text per snippet, scored against the reference target.

Loaded, inspected and scored (baselines, prediction files) today; no head yet, so not trainable.
Baselines: the most frequent train target, a random train target, the nearest train example's target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtpeft.tasks.kinds.base import Baseline, Kind, Outputs, Rows, TaskEvaluation

if TYPE_CHECKING:
    from mtpeft.data.example import Example
    from mtpeft.tasks.spec import TaskSpec


class GenerationKind(Kind):
    name = "generation"
    record_roles = ("code", "target")
    inputs = ("code",)

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
        }


GENERATION = GenerationKind()
