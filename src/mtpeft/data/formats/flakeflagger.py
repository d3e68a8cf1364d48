"""FlakeFlagger flaky-test data as read by the published multi-task replication code: `<split>.json`, one
JSON list of {code, label, project, test_name}; id = test_name, group = project.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mtpeft.data.example import Example
from mtpeft.data.formats.base import register_format
from mtpeft.data.formats.records import Location, RecordConverter, UniqueIds
from mtpeft.data.formats.textio import JsonList, load_json_list, order_splits, split_file, split_files
from mtpeft.errors import DataError
from mtpeft.tasks.spec import TaskSpec


@register_format
class FlakeFlaggerReader:
    name = "flakeflagger-json"
    description = "<split>.json holding one JSON list of {code, label, project, test_name} objects"
    suffixes = (".json",)
    defaults: ClassVar[dict[str, str]] = {
        "code": "code",
        "label": "label",
        "id": "test_name",
        "group": "project",
    }

    def splits(self, root: Path) -> list[str]:
        return order_splits(split_files(root, self.suffixes))

    def read(self, root: Path, split: str, task: TaskSpec) -> list[Example]:
        records = load_json_list(split_file(root, split, self.suffixes, self.name))
        converter = RecordConverter(task, self.name, self.defaults)
        unique = UniqueIds(records.path, converter.id_field)
        examples = []
        for number, record in enumerate(records.records, start=1):
            example = self._convert(records, number, record, converter)
            try:
                unique.add(example.id, place=f"record {number}")
            except DataError as err:
                raise _at_line(err, records.line_of(number - 1)) from None
            examples.append(example)
        return examples

    @staticmethod
    def _convert(records: JsonList, number: int, record: object, converter: RecordConverter) -> Example:
        try:
            return converter.convert(record, Location(records.path, None, record=f"record {number}"))
        except DataError as err:
            # Finding a record's line costs a scan of the file, so it is done only for the error.
            raise _at_line(err, records.line_of(number - 1)) from None


def _at_line(err: DataError, line: int) -> DataError:
    return DataError(err.reason, path=err.path, line=line, field=err.field, hint=err.hint)
