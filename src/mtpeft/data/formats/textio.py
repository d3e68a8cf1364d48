"""Reading data files as located text: bytes -> lines -> JSON, every failure a DataError naming file and line.

Shared by the format readers; nothing here knows about tasks or roles. Parsing is the json module's;
`datasets.load_dataset("json")` is not used because it names no line or field for a bad record.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtpeft.errors import DataError

CANONICAL_SPLITS = ("train", "valid", "dev", "test")
_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


def read_text(path: Path) -> str:
    """The whole file as text (gunzipped when it ends in .gz); bad bytes are reported by line and offset.

    Decoding the whole buffer at once is much faster than line by line; the line is recovered from
    the error's byte position only when decoding fails.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as err:
        raise DataError(f"cannot read the file: {err.strerror}", path=path) from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DataError(f"not a valid gzip file ({err})", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _encoding_error(path, data, err) from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the first record


def _encoding_error(path: Path, data: bytes, err: UnicodeDecodeError) -> DataError:
    line_start = data.rfind(b"\n", 0, err.start) + 1
    line_end = data.find(b"\n", err.start)
    line_bytes = data[line_start : line_end if line_end >= 0 else len(data)]
    column = err.start - line_start
    return DataError(
        f"byte 0x{data[err.start]:02x} at byte offset {column} of the line (offset {err.start} in the file) "
        "is not valid UTF-8",
        path=path,
        line=data.count(b"\n", 0, err.start) + 1,
        field=_field_at(line_bytes, column),
        hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
    )


def _field_at(line_bytes: bytes, column: int) -> str | None:
    """Best guess at the JSON field holding byte `column` of a line: the last `"key":` before it."""
    prefix = line_bytes[:column].decode("utf-8", errors="replace")
    keys = _JSON_KEY.findall(prefix)
    return keys[-1] if keys else None


def text_lines(text: str) -> list[str]:
    """Lines split on '\\n' only (str.splitlines would also split on U+2028 inside JSON strings)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return lines


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; an empty file or a bad line is a DataError."""
    seen_any = False
    for line_no, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"not valid JSON at column {err.colno}: {err.msg}",
                path=path,
                line=line_no,
                hint="each line of a .jsonl file must be one complete JSON object",
            ) from None
        seen_any = True
        yield line_no, value
    if not seen_any:
        raise DataError("file is empty (no records)", path=path)


@dataclass
class JsonList:
    """A file holding one JSON list of records, with the line where each record starts."""

    path: Path
    text: str
    records: list[object]
    _offsets: list[int] | None = field(default=None, repr=False)

    def line_of(self, index: int) -> int:
        """1-based line where record `index` (0-based) starts; computed only when an error needs it."""
        if self._offsets is None:
            self._offsets = _record_offsets(self.text)
        return self.text.count("\n", 0, self._offsets[index]) + 1


def load_json_list(path: Path) -> JsonList:
    text = read_text(path)
    if not text.strip():
        raise DataError("file is empty", path=path, hint="expected a JSON list of records: [{...}, ...]")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"not valid JSON at column {err.colno}: {err.msg}", path=path, line=err.lineno
        ) from None
    if not isinstance(value, list):
        raise DataError(
            f"expected a JSON list of records, got a JSON {json_type(value)}",
            path=path,
            line=1,
            hint="the file must look like [{...}, {...}]",
        )
    if not value:
        raise DataError("the JSON list is empty (no records)", path=path, line=1)
    return JsonList(path, text, value)


def _record_offsets(text: str) -> list[int]:
    """Character offset where each item of a valid top-level JSON list starts.

    Hand-written: the json module reports no positions for list items; raw_decode (the library's own
    scanner) still parses each item, this only steps over the brackets and commas between them.
    """
    decoder = json.JSONDecoder()
    pos = _JSON_WS.match(text, 0).end() + 1  # past '['
    offsets: list[int] = []
    while True:
        pos = _JSON_WS.match(text, pos).end()
        if text[pos] == "]":
            return offsets
        offsets.append(pos)
        _, pos = decoder.raw_decode(text, pos)
        pos = _JSON_WS.match(text, pos).end()
        if text[pos] == ",":
            pos += 1


def json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def order_splits(names: Iterable[str]) -> list[str]:
    """train, valid, dev, test first (in that order), then any others alphabetically."""
    unique = set(names)
    known = [name for name in CANONICAL_SPLITS if name in unique]
    return known + sorted(unique - set(known))


def split_files(root: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """split name -> file, for files named `<split><suffix>` directly under `root` (first suffix wins)."""
    if not root.is_dir():
        raise DataError("data folder does not exist or is not a folder", path=root)
    found: dict[str, Path] = {}
    for suffix in reversed(suffixes):
        for path in root.glob(f"*{suffix}"):
            found[path.name[: -len(suffix)]] = path
    return found


def split_file(root: Path, split: str, suffixes: Sequence[str], format_name: str) -> Path:
    """The file of one split, or a DataError naming the file that was expected."""
    path = split_files(root, suffixes).get(split)
    if path is None:
        present = order_splits(split_files(root, suffixes))
        raise DataError(
            f"split file for '{split}' not found (splits present: {', '.join(present) or 'none'})",
            path=root / f"{split}{suffixes[0]}",
            hint=f"the {format_name} format expects {' or '.join(split + s for s in suffixes)}",
        )
    return path
