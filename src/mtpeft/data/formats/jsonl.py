"""Generic jsonl: `<split>.jsonl`, one JSON object per line (e.g. CoRCoD complexity: {idx, code, label}).

Also the base of the published jsonl formats (devign-jsonl, codesearchnet), which differ only in their
default field names, id fields and kept metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mtpeft.data.example import Example
from mtpeft.data.formats.base import register_format
from mtpeft.data.formats.records import Location, RecordConverter, UniqueIds
from mtpeft.data.formats.textio import iter_jsonl, order_splits, split_file, split_files
from mtpeft.tasks.spec import TaskSpec


@register_format
class JsonlReader:
    name = "jsonl"
    description = (
        "<split>.jsonl (or .jsonl.gz), one JSON object per line: {code, label} plus optional idx, project; "
        "pair tasks add code_b, retrieval tasks query, generation tasks target"
    )
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".jsonl.gz")
    defaults: ClassVar[dict[str, str]] = {
        "code": "code",
        "label": "label",
        "code_b": "code_b",
        "query": "query",
        "target": "target",
        "id": "idx",
        "group": "project",
    }
    id_fallbacks: ClassVar[tuple[str, ...]] = ()
    meta_fields: ClassVar[tuple[str, ...]] = ()
    # Records without an id get "<split>:<line>"; formats whose id is part of the format set this False.
    line_ids: ClassVar[bool] = True

    def splits(self, root: Path) -> list[str]:
        return order_splits(split_files(root, self.suffixes))

    def read(self, root: Path, split: str, task: TaskSpec) -> list[Example]:
        path = split_file(root, split, self.suffixes, self.name)
        converter = RecordConverter(
            task, self.name, self.defaults, id_fallbacks=self.id_fallbacks, meta_fields=self.meta_fields
        )
        unique = UniqueIds(path, converter.id_field)
        examples = []
        for line, record in iter_jsonl(path):
            example = converter.convert(
                record, Location(path, line), default_id=f"{split}:{line}" if self.line_ids else None
            )
            unique.add(example.id, line=line)
            examples.append(example)
        return examples
