"""A task is declared, not coded: kind, input fields, label set, metrics and data format."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtpeft.config_files import read_yaml_mapping, validate_model
from mtpeft.errors import DataError, shorten, shorten_list
from mtpeft.tasks.kinds import KINDS


class TaskKind:
    """Names of the built-in task kinds. The kinds themselves (and any added one) are in tasks/kinds/."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    PAIR = "pair"
    RETRIEVAL = "retrieval"
    GENERATION = "generation"


FIELD_ROLES = {"code", "label", "code_b", "query", "target", "id", "group"}
# How a label in a data file is matched to a task's `labels` (also in docs/tasks.md).
LABEL_RULE = (
    "a label is one of the task's label strings (spaces around it ignored), or a JSON integer whose "
    'digits are one of them (1 for "1"); true/false, decimals such as 1.0, NaN, Infinity, null, lists '
    "and objects are never labels"
)


def _shown(raw: object) -> str:
    """A raw label for a message, cut short (a label may be a megabyte of junk)."""
    if isinstance(raw, bool | float) or raw is None:
        return json.dumps(raw)  # true, NaN, null: as the file wrote them
    return shorten(raw, 60)


def _label_type(raw: object) -> str:
    if isinstance(raw, bool):
        return "boolean"
    names = {int: "huge integer", float: "decimal number", list: "list", dict: "object", type(None): "null"}
    return names.get(type(raw), type(raw).__name__)


class PromptSpec(BaseModel):
    """How `mtpeft prompt` asks a general LLM about this task; every field optional (defaults per kind in
    prompting/templates.py). The answer instruction ("Answer yes or no.") is added after `question`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str | None = Field(
        default=None, description="System message (default: the task's description under a short role)."
    )
    question: str | None = Field(default=None, description="The question asked after the code.")
    labels: dict[str, str] | None = Field(
        default=None,
        description="Label (as in the files) -> the word the model answers with, e.g. {'1': yes, '0': no}.",
    )

    @field_validator("labels")
    @classmethod
    def _distinct_words(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        if labels is None:
            return None
        words = [w.strip().casefold() for w in labels.values()]
        if not all(words):
            raise ValueError("prompt.labels: every answer word must be non-empty")
        if len(set(words)) != len(words):
            shown = shorten_list(labels.values())
            raise ValueError(f"prompt.labels: answer words must differ (ignoring case): {shown}")
        return {label: word.strip() for label, word in labels.items()}


class TaskSpec(BaseModel):
    """Everything mtpeft needs to know about a task; loaded from YAML (built-in or the user's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, description="Short unique name, used in configs, reports and the store.")
    kind: str = Field(description="binary | multiclass | pair | retrieval | generation (tasks/kinds/).")
    format: str = Field(description="Data format reader name (see `mtpeft data formats`).")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Role -> field name in the files (roles: code, label, code_b, query, target, id, group); "
        "overrides the format's defaults.",
    )
    labels: list[str] | None = Field(
        default=None, description="Label set as it appears in the files (classification kinds only)."
    )
    metrics: list[str] = Field(description="Metric names; the first is the primary one unless set below.")
    primary_metric: str | None = Field(default=None, description="Metric used for model selection.")
    data: str | None = Field(default=None, description="Default data folder (relative to the YAML file).")
    description: str = ""
    trainable: bool = Field(default=True, description="False where training this kind is not supported yet.")
    prompt: PromptSpec | None = Field(
        default=None,
        description="Optional: how `mtpeft prompt` words the question and the answers; also the prompt and "
        "the answer words (`prompt.labels`) of a classification task trained in `formulation: instruct`.",
    )
    instruction: str | None = Field(
        default=None,
        min_length=1,
        description="Generation tasks: the instruction before the code in the prompt the model learns to "
        "answer, e.g. 'Summarize this method in one sentence.' (default: a generic one).",
    )

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        """A label twice would make two classes of one name: counts, heads and metrics would disagree on
        which is meant (data files are matched on the stripped text, so " 1" is "1" too)."""
        seen: dict[str, int] = {}
        for position, label in enumerate(labels or []):
            first = seen.setdefault(label.strip(), position)
            if first != position:
                raise ValueError(
                    f"label {shorten(label, 60)} is given twice (entries {first} and {position}); each label "
                    "must appear once"
                )
        return labels

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {shorten(kind, 60)}; kinds are {', '.join(KINDS.names())}")
        return kind

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        unknown = set(self.fields) - FIELD_ROLES
        if unknown:
            raise ValueError(
                f"unknown field roles {shorten_list(sorted(unknown))}; roles are "
                f"{', '.join(sorted(FIELD_ROLES))}"
            )
        KINDS[self.kind].check(self)
        if not self.metrics:
            raise ValueError(f"task {shorten(self.name, 60)} needs at least one metric")
        if self.primary_metric and self.primary_metric not in self.metrics:
            raise ValueError(
                f"primary_metric {shorten(self.primary_metric, 60)} is not in metrics "
                f"{shorten_list(self.metrics)}"
            )
        self._check_prompt_labels()
        if self.instruction is not None and self.kind != TaskKind.GENERATION:
            raise ValueError(
                f"'instruction' is for generation tasks; a {self.kind} task in formulation: instruct is "
                "asked its `prompt:` question (prompt.question, prompt.labels)"
            )
        return self

    def _check_prompt_labels(self) -> None:
        words = self.prompt.labels if self.prompt else None
        if words is None:
            return
        if not self.labels:
            raise ValueError(
                f"prompt.labels: task {shorten(self.name, 60)} ({self.kind}) has no label set to map"
            )
        if set(words) != set(self.labels):
            raise ValueError(
                f"prompt.labels must give one answer word for each label ({shorten_list(self.labels)}); got "
                f"{shorten_list(sorted(words))}"
            )

    @property
    def primary(self) -> str:
        return self.primary_metric or self.metrics[0]

    @property
    def num_labels(self) -> int:
        return len(self.labels or [])

    def field_name(self, role: str, default: str) -> str:
        """The field name for a role in this task's files (task override, else the format default)."""
        return self.fields.get(role, default)

    def label_index(self, raw: object, *, path: str | Path, line: int | None, field: str) -> int:
        """Map a raw label from a file to its index in the label set, or raise a located DataError.

        Strict (LABEL_RULE): a string of the set, or an integer whose digits are one; never a boolean,
        a decimal, NaN or null, which sloppy coercion would turn into a wrong label silently."""
        assert self.labels is not None
        if isinstance(raw, str):
            text = raw.strip()
        elif isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() < 256:
            text = str(raw)
        else:
            raise DataError(
                f"label {_shown(raw)} is a JSON {_label_type(raw)}, not one of the labels "
                f"[{shorten_list(self.labels)}] of task {shorten(self.name, 60)}",
                path=path,
                line=line,
                field=field,
                hint=LABEL_RULE,
            )
        if text not in self.labels:
            raise DataError(
                f"label {_shown(raw)} is not in the label set [{shorten_list(self.labels)}] of task "
                f"{shorten(self.name, 60)}",
                path=path,
                line=line,
                field=field,
                hint="fix the record or add the label to the task's 'labels'",
            )
        return self.labels.index(text)

    def label_name(self, index: int) -> str:
        """A label index as the task's files write it ("0"/"1" for the CodeXGLUE tasks)."""
        return self.labels[int(index)] if self.labels else str(int(index))

    def with_data(self, data: str | Path | None) -> TaskSpec:
        return self.model_copy(update={"data": str(data) if data is not None else None})

    def with_name(self, name: str) -> TaskSpec:
        return self.model_copy(update={"name": name})


def load_task_yaml(path: str | Path) -> TaskSpec:
    """Read a task YAML; a relative `data` path is resolved against the YAML's folder."""
    path = Path(path)
    raw = read_yaml_mapping(path, what="task file", expected="name, kind, format, ...")
    spec = validate_model(TaskSpec, raw, path=path)
    if spec.data and not Path(spec.data).is_absolute():
        spec = spec.with_data((path.parent / spec.data).resolve())
    return spec
