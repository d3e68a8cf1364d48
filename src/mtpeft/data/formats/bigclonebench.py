"""CodeXGLUE Clone-detection-BigCloneBench: `data.jsonl` lines {func, idx} and `<split>.txt` lines
`idx1<TAB>idx2<TAB>label` -> Example(id=idx1, id_b=idx2, code=func1, code_b=func2, label).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from mtpeft.data.example import Example
from mtpeft.data.formats.base import register_format
from mtpeft.data.formats.records import Location, UniqueIds, require_id, require_object, require_text
from mtpeft.data.formats.textio import (
    iter_jsonl,
    order_splits,
    read_text,
    require_file,
    shorten,
    split_file,
    split_files,
    text_lines,
)
from mtpeft.errors import DataError
from mtpeft.tasks.spec import TaskSpec

FUNCTIONS_FILE = "data.jsonl"


@register_format
class BigCloneBenchReader:
    name = "bigclonebench"
    description = "data.jsonl lines {func, idx} and <split>.txt lines idx1<TAB>idx2<TAB>label"
    split_suffixes = (".txt",)

    def splits(self, root: Path) -> list[str]:
        return order_splits(split_files(root, self.split_suffixes))

    def read(self, root: Path, split: str, task: TaskSpec) -> list[Example]:
        pairs_path = split_file(root, split, self.split_suffixes, self.name)
        functions_path = root / FUNCTIONS_FILE
        require_file(functions_path, "function file", hint=f"the {self.name} format needs it")
        stat = functions_path.stat()
        functions = _load_functions(
            functions_path,
            stat.st_mtime_ns,
            stat.st_size,
            task.field_name("code", "func"),
            task.field_name("id", "idx"),
        )
        unique = UniqueIds(pairs_path, field=None, what="pair")
        examples = []
        for line_no, line in enumerate(text_lines(read_text(pairs_path)), start=1):
            if not line.strip():
                continue
            example = self._pair(line, Location(pairs_path, line_no), functions, task)
            unique.add((example.id, example.id_b), line=line_no)
            examples.append(example)
        if not examples:
            raise DataError("file is empty (no pairs)", path=pairs_path)
        return examples

    @staticmethod
    def _pair(line: str, at: Location, functions: dict[str, str], task: TaskSpec) -> Example:
        columns = line.split()  # CodeXGLUE splits on tabs; any whitespace also accepts space-separated files
        if len(columns) != 3:
            raise at.error(
                f"expected 3 tab-separated columns idx1, idx2, label; got {len(columns)}: {shorten(line)}"
            )
        id_a, id_b, raw_label = columns
        for column, function_id in (("idx1", id_a), ("idx2", id_b)):
            if function_id not in functions:
                raise at.error(
                    f"function id {shorten(function_id)} is not in {FUNCTIONS_FILE}",
                    field=column,
                    hint=f"add the function to {FUNCTIONS_FILE} or drop the pair",
                )
        label = task.label_index(raw_label, path=at.path, line=at.line, field="label")
        return Example(id=id_a, id_b=id_b, code=functions[id_a], code_b=functions[id_b], label=label)


@lru_cache(maxsize=4)
def _load_functions(path: Path, mtime_ns: int, size: int, code_field: str, id_field: str) -> dict[str, str]:
    """id -> code; cached by file identity (mtime, size) since every split reads the same 11 MB file."""
    del mtime_ns, size  # part of the cache key only
    functions: dict[str, str] = {}
    unique = UniqueIds(path, field=id_field)
    for line, record in iter_jsonl(path):
        at = Location(path, line)
        record = require_object(record, at)
        function_id = require_id(record, id_field, at)
        unique.add(function_id, line=line)
        functions[function_id] = require_text(record, code_field, at, "code")
    return functions
