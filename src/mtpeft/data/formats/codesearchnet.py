"""CodeSearchNet / CodeXGLUE AdvTest jsonl: `<split>.jsonl` (or `.jsonl.gz`) with `code`, `docstring`,
`code_tokens`, `docstring_tokens`, `url`, `func_name` and, in AdvTest, `idx`.

Retrieval tasks read query=docstring, code=code; generation tasks (summarization) code=code,
target=docstring. The id is `idx` where present, else `url`.
"""

from __future__ import annotations

from typing import ClassVar

from mtpeft.data.formats.base import register_format
from mtpeft.data.formats.jsonl import JsonlReader


@register_format
class CodeSearchNetReader(JsonlReader):
    name = "codesearchnet"
    description = (
        "<split>.jsonl or <split>.jsonl.gz, one object per line: code, docstring, code_tokens, "
        "docstring_tokens, url, func_name (optional idx); retrieval: docstring -> code; "
        "generation: code -> docstring"
    )
    defaults: ClassVar[dict[str, str]] = {
        "code": "code",
        "query": "docstring",
        "target": "docstring",
        "id": "idx",
        "group": "repo",
    }
    id_fallbacks: ClassVar[tuple[str, ...]] = ("url",)
    meta_fields: ClassVar[tuple[str, ...]] = ("url", "func_name")
    line_ids: ClassVar[bool] = False
