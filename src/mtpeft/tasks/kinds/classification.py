"""Binary and multiclass classification of one snippet: a label from the task's label set.

Head: an MLP on the pooled code vector, cross-entropy (heads/classification.py). Or, in formulation
`instruct`, no head: the prompt `mtpeft prompt` asks (prompting/templates.py) and the label's answer word
as the target, predicted as the answer word the model finds most likely. Metrics from label indices;
baselines: majority label, random label, TF-IDF + logistic regression.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtpeft.errors import shorten, shorten_list
from mtpeft.tasks.kinds.base import Baseline, Kind, Outputs, Rows, TaskEvaluation

if TYPE_CHECKING:
    from mtpeft.data.example import Example
    from mtpeft.heads.base import TaskHead
    from mtpeft.prompting.templates import Conversation
    from mtpeft.tasks.spec import TaskSpec


class ClassificationKind(Kind):
    record_roles = ("code", "label")
    inputs = ("code",)
    labelled = True
    formulations = ("heads", "instruct")

    def __init__(self, name: str, *, exact_labels: int | None = None) -> None:
        self.name = name
        self.exact_labels = exact_labels

    def check(self, spec: TaskSpec) -> None:
        super().check(spec)
        if self.exact_labels and spec.labels and len(spec.labels) != self.exact_labels:
            raise ValueError(
                f"{self.name} task {shorten(spec.name, 60)} needs exactly {self.exact_labels} labels, got "
                f"{len(spec.labels)}: {shorten_list(spec.labels)}"
            )

    def build_head(self, spec: TaskSpec, hidden_size: int, options: dict[str, Any]) -> TaskHead:
        from mtpeft.heads.classification import ClassificationHead

        return ClassificationHead(
            hidden_size, spec.num_labels, inputs=self.inputs, dropout=options.get("dropout", 0.1)
        )

    def prompt(self, spec: TaskSpec, example: Example) -> Conversation:
        from mtpeft.prompting.templates import template_for

        return template_for(spec).conversation(example, shots=[])

    def target(self, spec: TaskSpec, example: Example) -> str:
        return self.choices(spec)[int(example.label or 0)]

    def choices(self, spec: TaskSpec) -> list[str]:
        from mtpeft.prompting.templates import template_for

        return list(template_for(spec).words)

    def score(self, spec: TaskSpec, outputs: dict[str, Any], examples: list[Example]) -> TaskEvaluation:
        from mtpeft.evaluation.metrics import compute_metrics

        y_pred = outputs["y_pred"].long().tolist()
        y_true = self.gold(examples)["y_true"]
        metrics = compute_metrics(spec.metrics, y_true=y_true, y_pred=y_pred)
        kept = {"y_pred": y_pred}
        if "logits" in outputs:  # a head's raw logits: what calibration is fitted and measured on
            kept["logits"] = outputs["logits"].float().numpy()
        return TaskEvaluation(metrics, kept, {"y_true": y_true, "y_pred": y_pred})

    def gold(self, examples: list[Example]) -> dict[str, Any]:
        return {"y_true": [int(e.label) for e in examples]}  # type: ignore[arg-type]

    def prediction_rows(self, spec: TaskSpec, examples: list[Example], outputs: Outputs) -> Rows:
        for e, pred in zip(examples, outputs["y_pred"], strict=True):
            row = {"id": e.id} | ({"id_b": e.id_b} if e.id_b is not None else {})
            yield row | {"y_true": spec.label_name(e.label), "y_pred": spec.label_name(pred)}

    def baselines(self) -> dict[str, Baseline]:
        from mtpeft.evaluation import baselines

        return {
            "majority": baselines.majority_labels,
            "random": baselines.random_labels,
            "tfidf": baselines.tfidf_classifier,
        }


BINARY = ClassificationKind("binary", exact_labels=2)
MULTICLASS = ClassificationKind("multiclass")
