"""Retrieval head (code search): projection, L2 normalisation, in-batch contrastive loss.

Query and code go through the same backbone and the same projection; within a batch every other
code is a negative. Scores are cosine similarities times `scale` (1 / temperature), as in the study.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtpeft.heads.base import TaskHead, register_head
from mtpeft.tasks.spec import TaskKind, TaskSpec


class RetrievalHead(TaskHead):
    def __init__(self, hidden_size: int, dim: int = 256, scale: float = 20.0) -> None:
        super().__init__()
        self.projection = nn.Linear(hidden_size, dim)
        self.scale = scale

    def embed(self, encode, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(encode(input_ids, attention_mask)), dim=-1)

    def loss(self, encode, batch: dict[str, Any]) -> torch.Tensor:
        queries = self.embed(encode, batch["query_input_ids"], batch["query_attention_mask"])
        codes = self.embed(encode, batch["input_ids"], batch["attention_mask"])
        scores = queries @ codes.T * self.scale
        return nn.functional.cross_entropy(scores, torch.arange(len(scores), device=scores.device))

    def predict(self, encode, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # Embeddings only: ranking needs every candidate of the split, done by the evaluator.
        return {
            "query_emb": self.embed(encode, batch["query_input_ids"], batch["query_attention_mask"]),
            "code_emb": self.embed(encode, batch["input_ids"], batch["attention_mask"]),
        }


@register_head(TaskKind.RETRIEVAL)
def _retrieval(task: TaskSpec, hidden_size: int, options: dict[str, Any]) -> TaskHead:
    return RetrievalHead(hidden_size, dim=options.get("dim", 256), scale=options.get("scale", 20.0))
