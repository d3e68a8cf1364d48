"""Retrieval (code search): rank every candidate code of the split for each natural-language query.

Query and code go through the same backbone and the same projection (heads/retrieval.py); query i's
correct candidate is code i. Metrics from the rank of the correct code; baselines: random ranking and
TF-IDF cosine (no majority: every query has its own answer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtpeft.tasks.kinds.base import Baseline, Kind, Outputs, Rows, TaskEvaluation

if TYPE_CHECKING:
    from mtpeft.data.example import Example
    from mtpeft.heads.base import TaskHead
    from mtpeft.tasks.spec import TaskSpec


class RetrievalKind(Kind):
    name = "retrieval"
    record_roles = ("query", "code")
    inputs = ("query", "code")  # encoding order: queries first, as the contrastive loss always did

    def build_head(self, spec: TaskSpec, hidden_size: int, options: dict[str, Any]) -> TaskHead:
        from mtpeft.heads.retrieval import RetrievalHead

        return RetrievalHead(
            hidden_size, dim=options.get("dim", 256), scale=options.get("scale", 20.0), inputs=self.inputs
        )

    def score(self, spec: TaskSpec, outputs: dict[str, Any], examples: list[Example]) -> TaskEvaluation:
        from mtpeft.evaluation.baselines import retrieval_ranks
        from mtpeft.evaluation.metrics import compute_metrics

        queries, codes = outputs["query_emb"], outputs["code_emb"]
        scores = (queries @ codes.T).numpy()
        ranks = retrieval_ranks(queries.numpy(), codes.numpy())
        metrics = compute_metrics(spec.metrics, ranks=ranks)
        return TaskEvaluation(metrics, {"scores": scores}, {"ranks": [int(r) for r in ranks]})

    def gold(self, examples: list[Example]) -> dict[str, Any]:
        return {}  # the ranks already encode where the correct candidate landed

    def prediction_rows(self, spec: TaskSpec, examples: list[Example], outputs: Outputs) -> Rows:
        from mtpeft.evaluation.baselines import ranks_from_scores

        ranks = ranks_from_scores(outputs["scores"])
        return ({"id": e.id, "rank": int(r)} for e, r in zip(examples, ranks, strict=True))

    def baselines(self) -> dict[str, Baseline]:
        from mtpeft.evaluation import baselines

        return {"random": baselines.random_ranking, "tfidf": baselines.tfidf_ranking}


RETRIEVAL = RetrievalKind()
