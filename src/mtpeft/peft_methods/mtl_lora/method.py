"""`mtl-lora`: the mtpeft method on the MTL-LoRA tuner; its task list is the run's tasks.

`apply_method(..., tasks=...)` (what a run's model build calls) fills option `tasks` for methods marked
`task_conditioned`, so the module gets one transform and one mixing row per task of the run, in order;
applied without tasks (a method on its own) it has one, used without any task context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtpeft.catalogue import METHOD_DESCRIPTIONS
from mtpeft.models.loading import ModelInfo
from mtpeft.peft_methods.mtl_lora.config import MtlLoraConfig
from mtpeft.peft_methods.peft_backed import PeftLibraryMethod, target_list


@dataclass(frozen=True)
class TaskConditionedMethod(PeftLibraryMethod):
    """A peft-backed method whose module differs per task: runs must give it their tasks and run each
    task's batches inside `task_context(task)`."""

    task_conditioned: bool = True


def _defaults(info: ModelInfo) -> dict[str, Any]:
    # r, alpha, dropout and targets as our LoRA (so the two compare at equal rank); k=4 up-projections,
    # temperature 1: the study's settings. Full r x r transforms as in the MTL-LoRA paper; the study ran
    # diagonal ones (`diagonal: true`).
    return {
        "r": 8,
        "alpha": 16,
        "dropout": 0.1,
        "target_modules": list(info.lora_targets),
        "up_projections": 4,
        "temperature": 1.0,
        "diagonal": False,
        "tasks": ["default"],
    }


def _config(info: ModelInfo, options: dict[str, Any]) -> MtlLoraConfig:
    return MtlLoraConfig(
        task_type=info.peft_task_type,
        target_modules=target_list(options["target_modules"]),
        r=options["r"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        tasks=list(options["tasks"]),
        up_projections=options["up_projections"],
        temperature=options["temperature"],
        diagonal=options["diagonal"],
    )


MTL_LORA = TaskConditionedMethod(
    name="mtl-lora",
    description=METHOD_DESCRIPTIONS["mtl-lora"],
    defaults=_defaults,
    make_config=_config,
    merge_problem="its per-task transforms and up-projection mixing have no counterpart in peft's "
    "add_weighted_adapter (it is already one module for several tasks)",
    export_problem=(
        "its backbone differs per task (a task-specific transform in every adapted layer), so one pass "
        "cannot answer every task as the one exported graph does"
    ),
)
