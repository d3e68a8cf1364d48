"""Devign vulnerability data in its two published layouts.

- devign-jsonl: CodeXGLUE Defect-detection, `<split>.jsonl` lines {func, target, project, commit_id, idx}.
- devign-json: the original Devign release, `function.json` (a JSON list of {project, commit_id, target,
  func}) plus `train.txt` / `valid.txt` / `test.txt` holding one 0-based index into that list per line
  (the split files CodeXGLUE's preprocessing reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mtpeft.data.example import Example
from mtpeft.data.formats.base import register_format
from mtpeft.data.formats.jsonl import JsonlReader
from mtpeft.data.formats.records import Location, RecordConverter, UniqueIds
from mtpeft.data.formats.textio import (
    JsonList,
    load_json_list,
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

DEVIGN_FIELDS = {"code": "func", "label": "target", "id": "idx", "group": "project"}


@register_format
class DevignJsonlReader(JsonlReader):
    name = "devign-jsonl"
    description = (
        "<split>.jsonl (CodeXGLUE Defect-detection), "
        "one object per line: func, target, project, commit_id, idx"
    )
    defaults: ClassVar[dict[str, str]] = DEVIGN_FIELDS
    meta_fields: ClassVar[tuple[str, ...]] = ("commit_id",)
    line_ids: ClassVar[bool] = False


@register_format
class DevignJsonReader:
    name = "devign-json"
    description = (
        "function.json (JSON list of {project, commit_id, target, func}) and "
        "train.txt / valid.txt / test.txt with one 0-based index into that list per line"
    )
    functions_file = "function.json"
    split_suffixes = (".txt",)

    def splits(self, root: Path) -> list[str]:
        return order_splits(split_files(root, self.split_suffixes))

    def read(self, root: Path, split: str, task: TaskSpec) -> list[Example]:
        index_path = split_file(root, split, self.split_suffixes, self.name)
        require_file(root / self.functions_file, "function file", hint=f"the {self.name} format needs it")
        functions = load_json_list(root / self.functions_file)
        converter = RecordConverter(task, self.name, DEVIGN_FIELDS, meta_fields=("commit_id",))
        unique = UniqueIds(index_path, field=None)
        examples = []
        for line, index in self._indexes(index_path, len(functions.records)):
            example = self._example(functions, index, converter)
            unique.add(example.id, line=line)
            examples.append(example)
        return examples

    @staticmethod
    def _example(functions: JsonList, index: int, converter: RecordConverter) -> Example:
        """The record at `index`; its id is the index unless the task names an id field."""
        try:
            at = Location(functions.path, None, record=f"record at index {index}")
            return converter.convert(functions.records[index], at, default_id=str(index))
        except DataError as err:
            # Finding a record's line costs a scan of function.json, so it is done only for the error.
            raise DataError(
                err.reason, path=err.path, line=functions.line_of(index), field=err.field, hint=err.hint
            ) from None

    @staticmethod
    def _indexes(path: Path, count: int) -> list[tuple[int, int]]:
        pairs = []
        for line_no, line in enumerate(text_lines(read_text(path)), start=1):
            text = line.strip()
            if not text:
                continue
            if not (text.isascii() and text.isdigit()):
                raise DataError(
                    f"expected one index per line, got {shorten(text, 40)}", path=path, line=line_no
                )
            # Compared as digits first: int() of more than 4300 digits raises ValueError.
            if len(text.lstrip("0")) > len(str(count)) or int(text) >= count:
                raise DataError(
                    f"index {shorten(text, 40, quoted=False)} is out of range: function.json holds "
                    f"{count} records (0..{count - 1})",
                    path=path,
                    line=line_no,
                )
            pairs.append((line_no, int(text)))
        if not pairs:
            raise DataError("file is empty (no indexes)", path=path)
        return pairs
