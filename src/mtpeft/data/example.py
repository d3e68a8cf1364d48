"""The one record type every format reader produces and every task consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One example of one task, independent of the file format it came from.

    - classification (binary/multiclass): `code` + `label`
    - pair: `code` + `code_b` + `label` (`id`, `id_b` are the two function ids)
    - retrieval: `query` (natural language) + `code` (the correct candidate)
    - generation: `code` (source) + `target` (reference output)
    """

    id: str
    code: str
    label: int | None = None
    code_b: str | None = None
    id_b: str | None = None
    query: str | None = None
    target: str | None = None
    group: str | None = None  # project / module, used for leakage-free splits and reports
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def blank_text_problem(text: str, role: str = "code") -> str | None:
    """Why `text` cannot be an input, or None: the one rule for empty input, shared by the data readers,
    `mtpeft predict`, the Python API (and the server's 422). Empty or whitespace-only text has nothing to
    analyse; answering it would report the model's bias as a prediction."""
    if text.strip():
        return None
    return f"is empty{' (only whitespace)' if text else ''}: {role} text is needed"
