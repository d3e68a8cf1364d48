"""What a prompting run is: model, tasks and data, shots, answer modes, test subset; YAML or flags.

One config makes one run per answer mode (generate, score, embed), each keyed by what defines its result,
so a rerun of the same command finds its run directory and resumes it, and a 5-shot run never reuses
0-shot answers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtpeft.config_files import Workspace, read_yaml_mapping, validate_model
from mtpeft.errors import ConfigError, MtpeftError, shorten, shorten_list
from mtpeft.tasks.registry import task_label

GENERATE, SCORE, EMBED = "generate", "score", "embed"
MODES = (GENERATE, SCORE, EMBED)
# Shorthands for --mode; "both" is the pair (generate and score), "all" adds the embedding variant.
MODE_SETS: dict[str, tuple[str, ...]] = {"both": (GENERATE, SCORE), "all": MODES}
OPENAI_PREFIX = "openai:"
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Random seed, 0 .. 2**32-1.")]


def parse_modes(text: str) -> tuple[str, ...]:
    """'both' | 'all' | a comma-separated list of generate, score, embed -> modes in a fixed order."""
    wanted: set[str] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if part in MODE_SETS:
            wanted.update(MODE_SETS[part])
        elif part in MODES:
            wanted.add(part)
        else:
            known = ", ".join([*MODES, *MODE_SETS])
            raise ValueError(
                f"unknown answer mode {shorten(part, 40)}; give one or more of {known} (comma-separated)"
            )
    return tuple(m for m in MODES if m in wanted)


class PromptTask(BaseModel):
    """One task to prompt: a built-in task name or task YAML, and its data folder."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, description="Built-in task name or path of a task YAML (.yaml/.yml).")
    data: str | None = Field(default=None, description="Data folder; defaults to the task's own `data`.")
    name: str | None = Field(default=None, min_length=1, description="Alias shown in results and the store.")

    @property
    def label(self) -> str:
        return self.name or task_label(self.task)


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(default="prompt", min_length=1, description="Run name prefix shown in `mtpeft runs`.")
    model: str = Field(
        default="smollm2-135m",
        description="A local causal LM (short name, hub id or folder), or openai:http://HOST:PORT/v1.",
    )
    model_name: str | None = Field(
        default=None, description="The served model's name (openai: models; default: the server's first)."
    )
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key.")
    concurrency: int | None = Field(default=None, ge=1, description="Requests in flight (openai: models).")
    max_retries: int | None = Field(default=None, ge=0, description="Retries per request (openai: models).")
    context_length: int | None = Field(
        default=None, ge=64, description="Prompt + answer tokens; default: the model's, at most 2048 locally."
    )
    tasks: list[PromptTask] = Field(min_length=1)
    shots: int = Field(default=0, ge=0, le=64, description="Few-shot examples per query (BM25-nearest).")
    mode: str = Field(default="both", description="generate | score | embed, comma-separated, both or all.")
    limit: int | None = Field(default=None, ge=1, description="Seeded subset of the split (as fine-tuning).")
    split: str = Field(default="test", min_length=1)
    seed: Seed = 0
    max_new_tokens: int = Field(default=12, ge=1, le=1024, description="Generated tokens per answer.")
    max_target_tokens: int = Field(
        default=128, ge=1, le=4096, description="Generation tasks (summarization, repair): tokens per reply."
    )
    batch_size: int = Field(default=8, ge=1, description="Prompts per forward pass (local models).")
    pool_size: int = Field(default=10, ge=2, description="Code search: candidates reranked per query.")
    embed_max_tokens: int = Field(default=512, ge=8, description="Code search embeddings: tokens per text.")
    workspace: Workspace = Field(default="workspace", description="Folder holding runs/ and mtpeft.sqlite.")
    study: str | None = Field(default=None, description="Study the runs belong to (reports filter on it).")
    baselines: bool = Field(default=True, description="Score majority and TF-IDF on the same examples.")

    @field_validator("mode")
    @classmethod
    def _known_modes(cls, mode: str) -> str:
        parse_modes(mode)
        return mode

    @model_validator(mode="after")
    def _check(self) -> PromptConfig:
        if self.is_openai and not self.model.removeprefix(OPENAI_PREFIX).strip():
            raise ValueError("an openai: model needs the server's URL, e.g. openai:http://127.0.0.1:8080/v1")
        labels = [t.label for t in self.tasks]
        dupes = sorted(label for label, n in Counter(labels).items() if n > 1)  # Counter: linear
        if dupes:
            raise ValueError(f"task names must be unique; give `name:` to tell apart: {shorten_list(dupes)}")
        return self

    @property
    def is_openai(self) -> bool:
        return self.model.startswith(OPENAI_PREFIX)

    @property
    def modes(self) -> tuple[str, ...]:
        return parse_modes(self.mode)

    @property
    def model_label(self) -> str:
        """The model as the store and reports name it."""
        if self.is_openai and self.model_name:
            return f"{OPENAI_PREFIX}{self.model_name}"
        return self.model

    def run_name(self, mode: str) -> str:
        return f"{self.name}-{mode}" if mode == EMBED else f"{self.name}-{mode}-{self.shots}shot"

    def defining(self, mode: str) -> dict[str, Any]:
        """What defines the result of the run of `mode` (its store hash and run directory key).

        Speed settings (batch size, concurrency) and places (workspace) do not; shots and generated tokens
        only where the mode uses them. Data folders count as absolute paths.
        """
        tasks = [
            {"task": t.task, "label": t.label, "data": str(Path(t.data).resolve()) if t.data else None}
            for t in self.tasks
        ]
        data: dict[str, Any] = {
            "kind": "prompting", "mode": mode, "model": self.model, "model_name": self.model_name,
            "tasks": tasks, "limit": self.limit, "split": self.split, "seed": self.seed,
            "context_length": self.context_length, "pool_size": self.pool_size,
        }  # fmt: skip
        if mode == EMBED:
            data["embed_max_tokens"] = self.embed_max_tokens
        else:
            data["shots"] = self.shots
        if mode == GENERATE:
            data["max_new_tokens"] = self.max_new_tokens
            if any(_generates(t.task) for t in self.tasks):
                data["max_target_tokens"] = self.max_target_tokens  # only here: older run keys stay valid
        return data


def _generates(task: str) -> bool:
    """Whether a task's replies are free text; False for one that cannot be read (load_tasks says why)."""
    from mtpeft.tasks import get_task

    try:
        return get_task(task).kind == "generation"
    except MtpeftError:
        return False


def load_prompt_config(path: str | Path | None, fields: dict[str, Any]) -> PromptConfig:
    """The config in `path` (optional) with the CLI's flags set over it; flags set to None are unset."""
    data = read_yaml_mapping(path, what="prompt config", expected="model, tasks, shots, ...") if path else {}
    data |= {k: v for k, v in fields.items() if v is not None}
    if not data.get("tasks"):
        raise ConfigError(
            "no tasks: give --task NAME=DATA_DIR (repeatable) or a `tasks:` list in the config", path=path
        )
    return validate_model(PromptConfig, data, path=path)


def parse_task_option(text: str) -> dict[str, str]:
    """`NAME=DATA_DIR` (or `NAME` alone, for a task that names its own data) -> a `tasks:` entry."""
    task, sep, data = (part.strip() for part in text.partition("="))
    if not task or (sep and not data):
        raise ConfigError(f"--task {shorten(text)}: give NAME=DATA_DIR, e.g. --task py-defect=data/py-defect")
    return {"task": task, "data": data} if data else {"task": task}
