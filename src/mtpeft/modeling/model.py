"""The multi-task model: ONE adapted backbone shared by all tasks, one small head per task.

One path for training, evaluation and inference: `encode_inputs` runs the backbone once per distinct
input of a batch (pooled vectors by role), then a head turns those vectors into a loss or predictions.
`analyze`, `embed` and `compare` are the inference entries built on the same two steps, so N tasks on
one snippet cost one backbone pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mtpeft.heads import TaskHead, build_head
from mtpeft.heads.classification import ClassificationHead
from mtpeft.heads.pooling import POOLINGS
from mtpeft.heads.retrieval import RetrievalHead
from mtpeft.modeling.inputs import Batch
from mtpeft.tasks.spec import TaskSpec


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        tasks: dict[str, TaskSpec],
        *,
        hidden_size: int,
        pooling: str,
        loss_weighting: nn.Module | None = None,
        head_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.tasks = tasks
        self.heads = nn.ModuleDict(
            {name: build_head(spec, hidden_size, head_options) for name, spec in tasks.items()}
        )
        # Training only (training/loss_weighting.py): a module here so its learned weights are
        # optimised, checkpointed and wrapped by DDP together with the heads.
        self.loss_weighting = loss_weighting

    # ---- the one path: encode each input once, then heads -----------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled vectors [batch, hidden]: one backbone pass."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return POOLINGS[self.pooling](hidden, attention_mask)

    def encode_inputs(self, batch: Batch, roles: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """{role: pooled vectors} for `roles` (default: every input of the batch), one pass each, in order."""
        inputs = batch["inputs"]
        return {role: self.encode(**inputs[role]) for role in (roles or inputs)}

    def task_loss(self, task: str, batch: Batch) -> torch.Tensor:
        head = self.heads[task]
        return head.loss(self.encode_inputs(batch, head.inputs), batch)

    def forward(self, task: str, batch: Batch) -> torch.Tensor:
        return self.task_loss(task, batch)

    @torch.no_grad()
    def predict(self, task: str, batch: Batch) -> dict[str, torch.Tensor]:
        head = self.heads[task]
        return head.predict(self.encode_inputs(batch, head.inputs))

    # ---- inference -----------------------------------------------------------------------------
    def snippet_tasks(self) -> list[str]:
        """Tasks whose head reads one snippet and gives class probabilities (binary, multiclass)."""
        return [n for n, h in self.heads.items() if isinstance(h, ClassificationHead) and len(h.inputs) == 1]

    @torch.no_grad()
    def analyze(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """{task: class probabilities [batch, labels]} of every snippet task (or `tasks`), from ONE encode."""
        snippet_tasks = self.snippet_tasks()
        names = list(snippet_tasks if tasks is None else tasks)
        others = [n for n in names if n not in snippet_tasks]
        if others:
            raise ValueError(
                f"analyze() runs one-snippet classification tasks ({', '.join(snippet_tasks) or 'none'}); "
                f"not {', '.join(others)} (use embed() for retrieval, compare() for pairs)"
            )
        pooled = self.encode(input_ids, attention_mask)
        return {n: self.heads[n].predict({self.heads[n].inputs[0]: pooled})["probs"] for n in names}

    @torch.no_grad()
    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str | None = None
    ) -> torch.Tensor:
        """Unit-length retrieval embeddings [batch, dim] of code or queries (one backbone, one projection)."""
        head = self._head_of_type(RetrievalHead, task, "embed")
        return head.project(self.encode(input_ids, attention_mask))

    @torch.no_grad()
    def compare(self, u: torch.Tensor, v: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """Pair-head probabilities [n, labels] for pooled vectors from `encode` (u, v: [n or 1, hidden])."""
        head = self._head_of_type(ClassificationHead, task, "compare", inputs=2)
        u, v = torch.broadcast_tensors(u, v)  # one snippet against many candidates
        return head.predict(dict(zip(head.inputs, (u, v), strict=True)))["probs"]

    def _head_of_type(
        self, cls: type[TaskHead], task: str | None, what: str, inputs: int | None = None
    ) -> TaskHead:
        """The named head, or the only one, of `cls` reading `inputs` inputs; else a message listing them."""
        fits = [
            n for n, h in self.heads.items() if isinstance(h, cls) and inputs in (None, len(h.inputs))
        ]
        if task is None and len(fits) == 1:
            return self.heads[fits[0]]
        if task in fits:
            return self.heads[task]
        if task is not None:
            problem = f"task '{task}' has no head for {what}()"
        else:
            problem = f"{what}() needs a task name" if fits else f"this model has no head for {what}()"
        raise ValueError(f"{problem}; tasks it can use: {', '.join(fits) or 'none'}")

    # ---- parameters ----------------------------------------------------------------------------
    def head_parameters(self) -> list[nn.Parameter]:
        weighting = list(self.loss_weighting.parameters()) if self.loss_weighting is not None else []
        return list(self.heads.parameters()) + weighting

    def head_parameter_count(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())
