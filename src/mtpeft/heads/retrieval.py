"""Retrieval head (code search): projection, L2 normalisation, in-batch contrastive loss.

Query and code vectors go through the same projection; within a batch every other code is a
negative, with several processes every other code of the global batch (gathered with its gradient).
Scores are cosine similarities times `scale` (1 / temperature), as in the study.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mtpeft.heads.base import TaskHead, Vectors
from mtpeft.modeling.distributed import SHARD_RANK, SHARD_SIZES, gather_rows


class RetrievalHead(TaskHead):
    def __init__(
        self,
        hidden_size: int,
        dim: int = 256,
        scale: float = 20.0,
        *,
        inputs: tuple[str, ...] = ("query", "code"),
    ) -> None:
        super().__init__()
        self.inputs = tuple(inputs)  # (queries, candidates)
        self.projection = nn.Linear(hidden_size, dim)
        self.scale = scale

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of pooled vectors (queries and code alike)."""
        return nn.functional.normalize(self.projection(pooled), dim=-1)

    def loss(self, vectors: Vectors, batch: Mapping[str, Any]) -> torch.Tensor:
        queries, codes = (self.project(vectors[role]) for role in self.inputs)
        first = 0  # this process's first row among the global batch's candidates
        if SHARD_SIZES in batch:  # several processes: every process's codes are negatives too
            sizes, rank = batch[SHARD_SIZES], batch[SHARD_RANK]
            codes = gather_rows(codes, sizes, rank)
            first = sum(sizes[:rank])
        scores = queries @ codes.T * self.scale
        targets = torch.arange(first, first + len(queries), device=scores.device)
        return nn.functional.cross_entropy(scores, targets)

    def predict(self, vectors: Vectors) -> dict[str, torch.Tensor]:
        # Embeddings only: ranking needs every candidate of the split, done by the retrieval kind.
        queries, codes = (self.project(vectors[role]) for role in self.inputs)
        return {"query_emb": queries, "code_emb": codes}
