"""The multi-task model: ONE adapted backbone shared by all tasks, one small head per task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtpeft.heads import build_head
from mtpeft.heads.pooling import POOLINGS
from mtpeft.tasks.spec import TaskSpec
from mtpeft.training.loss_weighting import LOSS_WEIGHTINGS

HEADS_FILE = "heads.safetensors"
HEADS_META = "heads.json"


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        tasks: dict[str, TaskSpec],
        *,
        hidden_size: int,
        pooling: str,
        loss_weighting: str = "equal",
        head_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.tasks = tasks
        self.heads = nn.ModuleDict(
            {name: build_head(spec, hidden_size, head_options) for name, spec in tasks.items()}
        )
        self.loss_weighting = LOSS_WEIGHTINGS[loss_weighting](list(tasks))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return POOLINGS[self.pooling](hidden, attention_mask)

    def task_loss(self, task: str, batch: dict[str, Any]) -> torch.Tensor:
        return self.heads[task].loss(self.encode, batch)

    def forward(self, task: str, batch: dict[str, Any]) -> torch.Tensor:
        return self.task_loss(task, batch)

    @torch.no_grad()
    def predict(self, task: str, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.heads[task].predict(self.encode, batch)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters()) + list(self.loss_weighting.parameters())

    def head_parameter_count(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())

    def save_heads(self, directory: Path, meta: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"{k}": v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        save_file(tensors, str(directory / HEADS_FILE))
        (directory / HEADS_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def load_heads(self, directory: Path) -> None:
        self.heads.load_state_dict(load_file(str(directory / HEADS_FILE)))
