"""Turning one parsed record (a JSON object) into an Example, checking every field a task needs.

Which roles a record must fill depends on the task kind (tasks/kinds/); which field holds each role
comes from the task YAML's `fields`, else the format's defaults.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from mtpeft.data.example import Example, blank_text_problem
from mtpeft.data.formats.textio import json_type, shorten
from mtpeft.errors import ConfigError, DataError
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskSpec


class Location:
    """Where a record sits: file, line and, in a JSON list, which record ("record 3"), named in messages."""

    def __init__(self, path: Path, line: int | None, record: str | None = None) -> None:
        self.path = path
        self.line = line
        self.prefix = f"{record}: " if record else ""

    def error(self, message: str, field: str | None = None, hint: str | None = None) -> DataError:
        return DataError(self.prefix + message, path=self.path, line=self.line, field=field, hint=hint)


def require_object(record: object, at: Location) -> dict:
    if not isinstance(record, dict):
        raise at.error(f"expected a JSON object {{...}}, got a JSON {json_type(record)}")
    return record


def field_names(record: dict, limit: int = 12) -> str:
    """The record's field names for a message; a hostile record may have thousands, or huge ones."""
    names = [name if len(name) <= 40 and name.isprintable() else shorten(name, 40) for name in sorted(record)]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "no fields") + more


def require_field(record: dict, name: str, at: Location, role: str) -> object:
    if name not in record:
        raise at.error(
            f"is missing (the record has: {field_names(record)})",
            field=name,
            hint=f"add it, or map role '{role}' to another field in the task YAML: fields: {{{role}: ...}}",
        )
    return record[name]


def require_text(record: dict, name: str, at: Location, role: str) -> str:
    """The field's text; a list of strings (a token list: CodeSearchNet's `code_tokens`,
    `docstring_tokens`) is joined with single spaces, as CodeXGLUE's own scripts join them."""
    value = require_field(record, name, at, role)
    if isinstance(value, list):
        odd = [token for token in value if not isinstance(token, str)]
        if odd:
            raise at.error(
                f"must be a string or a list of strings, got a list holding a JSON {json_type(odd[0])}",
                field=name,
            )
        value = " ".join(value)
    if not isinstance(value, str):
        raise at.error(f"must be a string, got a JSON {json_type(value)}", field=name)
    problem = blank_text_problem(value, role)
    if problem:
        raise at.error(problem, field=name, hint="drop the record or fill it in")
    return value


def require_id(record: dict, name: str, at: Location) -> str:
    value = require_field(record, name, at, "id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise at.error(f"an id must be a string or an integer, got a JSON {json_type(value)}", field=name)
    text = str(value).strip()
    if not text:
        raise at.error("id is empty", field=name)
    return text


def require_label(record: dict, name: str, at: Location, task: TaskSpec) -> int:
    """The label's index; which raw values count as which label is TaskSpec.label_index's rule, the one
    place it is decided (strict: no booleans, decimals or null)."""
    value = require_field(record, name, at, "label")
    try:
        return task.label_index(value, path=at.path, line=at.line, field=name)
    except DataError as err:
        raise at.error(err.reason, field=name, hint=err.hint) from None


def optional_text(record: dict, name: str | None) -> str | None:
    """A free-form field (group, meta) as text; absent, null or empty gives None."""
    value = record.get(name) if name else None
    if value is None or isinstance(value, dict | list):
        return None
    return str(value) or None


class RecordConverter:
    """Checks and converts the records of one file for one task."""

    def __init__(
        self,
        task: TaskSpec,
        format_name: str,
        defaults: Mapping[str, str],
        *,
        id_fallbacks: Sequence[str] = (),
        meta_fields: Sequence[str] = (),
    ) -> None:
        self.task = task
        self.fields = {
            role: self._field_for(role, task, format_name, defaults) for role in kind_of(task).record_roles
        }
        # A user's explicit id field is required; otherwise the format's id field, then its fallbacks.
        self.id_required = "id" in task.fields
        self.id_fields = (
            [task.fields["id"]] if self.id_required else [*filter(None, [defaults.get("id")]), *id_fallbacks]
        )
        self.group_field = task.field_name("group", defaults.get("group", "")) or None
        self.meta_fields = meta_fields

    @staticmethod
    def _field_for(role: str, task: TaskSpec, format_name: str, defaults: Mapping[str, str]) -> str:
        if role in task.fields:
            return task.fields[role]
        if role not in defaults:
            raise ConfigError(
                f"the {format_name} format has no default field for role '{role}' needed by a "
                f"{task.kind} task; name it in the task YAML (fields: {{{role}: <field>}})",
                field=f"fields.{role}",
            )
        return defaults[role]

    @property
    def id_field(self) -> str | None:
        return self.id_fields[0] if self.id_fields else None

    def convert(self, record: object, at: Location, *, default_id: str | None = None) -> Example:
        """One Example; `default_id` is used when the record has none of the id fields."""
        record = require_object(record, at)
        values: dict[str, object] = {
            role: require_label(record, name, at, self.task)
            if role == "label"
            else require_text(record, name, at, role)
            for role, name in self.fields.items()
        }
        return Example(
            id=self._id(record, at, default_id),
            group=optional_text(record, self.group_field),
            meta={name: text for name in self.meta_fields if (text := optional_text(record, name))},
            **values,
        )

    def _id(self, record: dict, at: Location, default_id: str | None) -> str:
        for name in self.id_fields:
            if name in record:
                return require_id(record, name, at)
        if default_id is not None and not self.id_required:
            return default_id
        names = " or ".join(shorten(name, 60) for name in self.id_fields)
        raise at.error(
            f"missing id field {names} (the record has: {field_names(record)})",
            field=self.id_field,
            hint="add an id, or name the id field in the task YAML: fields: {id: <name>}",
        )


class UniqueIds:
    """Rejects a second record with the same id (or id pair) in one split."""

    def __init__(self, path: Path, field: str | None, what: str = "id") -> None:
        self.path = path
        self.field = field
        self.what = what
        self.first_seen: dict[Hashable, str] = {}

    def add(self, key: Hashable, *, line: int | None = None, place: str | None = None) -> None:
        """`place` describes where the record is when a line number alone does not ("record 4")."""
        here = place or f"line {line}"
        if key in self.first_seen:
            shown = "\t".join(key) if isinstance(key, tuple) else key
            raise DataError(
                f"duplicate {self.what} {shorten(shown)} (first at {self.first_seen[key]}, again at {here})",
                path=self.path,
                line=line,
                field=self.field,
                hint=f"{self.what}s must be unique within the file; remove or renumber the duplicate",
            )
        self.first_seen[key] = here
