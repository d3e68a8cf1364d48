"""What `mtpeft export` can put into the one graph, decided from the registries, never by name here.

- A PEFT method (peft_methods registry) says whether its module merges into the backbone's weights
  (`merges_on_export`: LoRA, DoRA, IA3), and why it cannot be exported (`export_problem`: prefix and
  prompt tuning, MTL-LoRA); any other runs inside the graph as it runs in PyTorch (bottleneck adapters,
  full fine-tuning).
- A task kind (tasks/kinds registry) is exported when TASK_EXPORTS has an entry for it: what the graph
  answers for its tasks. A kind without one (generation) and any task trained through the LM head
  (formulation instruct) is refused: this exporter answers heads on pooled vectors, not text generation.

Every refusal names the method or task and what to do; nothing half-supported is exported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtpeft.errors import ConfigError
from mtpeft.export.folder import embedding_output, probs_output
from mtpeft.registry import Registry

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class TaskExport:
    """How the graph answers a task of one kind.

    answer: what the runtime calls for it ("probabilities": analyze; "pair": compare, from two pooled
        vectors and the head's weights in pair_heads.npz; "embedding": embed and search).
    output: the graph output holding its answer (None: it reads `pooled`).
    compute: that output from the task's head and the pooled vectors (torch, at export time).
    """

    answer: str
    output: Callable[[str], str] | None = None
    compute: Callable[[Any, Any], Any] | None = None


def _probabilities(head: Any, pooled: Any) -> Any:
    return head.predict({head.inputs[0]: pooled})["probs"]  # calibrated: softmax(logits / T)


def _embedding(head: Any, pooled: Any) -> Any:
    return head.project(pooled)  # unit length


PROBABILITIES = TaskExport("probabilities", probs_output, _probabilities)
PAIR = TaskExport("pair")
EMBEDDING = TaskExport("embedding", embedding_output, _embedding)

TASK_EXPORTS: Registry[TaskExport] = Registry("exportable task kind", base=TaskExport)
TASK_EXPORTS.register("binary", PROBABILITIES)
TASK_EXPORTS.register("multiclass", PROBABILITIES)
TASK_EXPORTS.register("pair", PAIR)
TASK_EXPORTS.register("retrieval", EMBEDDING)


def refusals(method: str, tasks: dict[str, str], lm_tasks: list[str]) -> list[str]:
    """Why a run cannot be exported (empty: it can): its method, then each task, by name.

    `tasks`: {task: kind}; `lm_tasks`: the tasks trained through the LM head (heads.json's lm_tasks).
    """
    from mtpeft.peft_methods import get_method

    problems = []
    problem = getattr(get_method(method), "export_problem", None)
    if problem:
        problems.append(f"method '{method}' cannot be exported: {problem}")
    for name, kind in tasks.items():
        if name in lm_tasks or kind not in TASK_EXPORTS:
            how = (
                "generative"
                if kind not in TASK_EXPORTS
                else "trained through the LM head (formulation instruct)"
            )
            problems.append(
                f"task '{name}' ({kind}) is {how}: generative and instruct tasks are out of scope for "
                "`mtpeft export`, which exports heads on pooled vectors"
            )
    return problems


def refuse(run_dir: Path, problems: list[str]) -> None:
    """One ConfigError listing every reason, with what can be exported instead."""
    if not problems:
        return
    from mtpeft.peft_methods import PEFT_METHODS

    methods = ", ".join(n for n, m in PEFT_METHODS.items() if not getattr(m, "export_problem", None))
    kinds = ", ".join(TASK_EXPORTS.names())
    raise ConfigError(
        f"this run cannot be exported: {'; '.join(problems)}. `mtpeft export` takes runs trained with "
        f"{methods} whose tasks are {kinds} (with heads); use the run directory itself (PyTorch) otherwise",
        path=run_dir,
    )
