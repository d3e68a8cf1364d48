"""Reading data files as located text: bytes -> lines -> JSON, every failure a DataError naming file and line.

Shared by the format readers; nothing here knows about tasks or roles. Parsing is the json module's, through
one bounded loader (`parse_json`); `datasets.load_dataset("json")` is not used because it names no line or
field for a bad record.

What any byte string becomes here (docs/tasks.md, "Supported task formats", lists the same rules):
- line ends: '\\n', '\\r\\n' and a lone '\\r' (old Mac files) all end a line, as in Python's universal
  newlines (CodeXGLUE's own readers use them); a raw CR can never sit inside a JSON string, so jsonl
  files are split the same way. U+2028 and other Unicode line separators do not end a line.
- a UTF-8 byte-order mark is dropped at the start of the file and of every line (files joined with `cat`);
  a UTF-16/32 mark, a NUL byte or a byte that is not UTF-8 is an error.
- JSON: nesting deeper than MAX_JSON_DEPTH, integers longer than MAX_INT_DIGITS, a key twice in one
  object and lone UTF-16 surrogates (an unpaired "\\ud800" escape) are errors, not data.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import stat
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

# shorten and SHOWN_CHARS are re-exported: the readers quote user text with them.
from mtpeft.errors import SHOWN_CHARS, DataError, shorten, shorten_list  # noqa: F401

CANONICAL_SPLITS = ("train", "valid", "dev", "test")
# Published records nest 2-3 levels; the json module recurses once per level, so a hostile line of
# 100k '[' ended in RecursionError. 64 leaves room for any real record.
MAX_JSON_DEPTH = 64
# Ids and labels are short; Python refuses int() of more than 4300 digits, and a 40-digit id is no id.
MAX_INT_DIGITS = 40

_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')
# A JSON string (its closing quote optional, so an unterminated one ends the scan) or a bracket.
_JSON_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
# A JSON string, or an integer literal (not a fraction's or an exponent's digits) that is too long.
_JSON_STRING_OR_LONG_INT = re.compile(
    rf'"[^"\\]*(?:\\.[^"\\]*)*"?|(?<![\d.eE+-])-?\d{{{MAX_INT_DIGITS + 1},}}(?![\d.eE])', re.DOTALL
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, a valid pair is one code point
_UNICODE_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",  # before UTF-16 LE: it starts with the same two bytes
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


# ---------------------------------------------------------------------------------------------------
# Files -> text


def require_file(path: Path, what: str = "file", hint: str | None = None) -> None:
    """A DataError unless `path` is a readable regular file (a folder or a FIFO named like a data file
    would otherwise fail with an OSError, or block forever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{what} not found", path=path, hint=hint) from None
    except OSError as err:
        raise DataError(f"cannot read the {what}: {err.strerror}", path=path) from None
    if stat.S_ISDIR(mode):
        raise DataError(f"is a folder, but a {what} is expected here", path=path, hint=hint)
    if not stat.S_ISREG(mode):
        raise DataError(f"is not a regular file (a pipe or a device?); a {what} is expected", path=path)


def read_text(path: Path) -> str:
    """The whole file as text with '\\n' line ends (gunzipped when it ends in .gz); bad bytes are reported
    by line and offset.

    Decoding the whole buffer at once is much faster than line by line; the line is recovered from
    the error's byte position only when decoding fails.
    """
    require_file(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(
            f"cannot read the file: {err.strerror}", path=path, hint="check its permissions"
        ) from None
    if path.suffix == ".gz":
        data = _gunzip(data, path)
    for bom, encoding in _UNICODE_BOMS.items():
        if data.startswith(bom):
            raise DataError(
                f"the file is {encoding}-encoded (it starts with a {encoding} byte-order mark)",
                path=path,
                line=1,
                hint=f"re-encode it as UTF-8, e.g. `iconv -f {encoding.lower()} -t utf-8`",
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _encoding_error(path, data, err) from None
    if "\x00" in text:
        raise _nul_error(path, text)
    return _universal_newlines(text).removeprefix("\ufeff")


def _gunzip(data: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # a bad header is OSError, a bad body zlib.error
        raise DataError(
            f"not a valid gzip file ({err})", path=path, hint="name it without .gz if it is not compressed"
        ) from None


def _universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _line_ends(data: str | bytes, end: int) -> int:
    """How many line ends ('\\n', '\\r\\n' or a lone '\\r') come before position `end`."""
    cr, lf = ("\r", "\n") if isinstance(data, str) else (b"\r", b"\n")
    crlf = cr + lf
    return data.count(lf, 0, end) + data.count(cr, 0, end) - data.count(crlf, 0, end)


def _encoding_error(path: Path, data: bytes, err: UnicodeDecodeError) -> DataError:
    line_start = max(data.rfind(b"\n", 0, err.start), data.rfind(b"\r", 0, err.start)) + 1
    line_ends = [i for i in (data.find(b"\n", err.start), data.find(b"\r", err.start)) if i >= 0]
    line_bytes = data[line_start : min(line_ends, default=len(data))]
    column = err.start - line_start
    return DataError(
        f"byte 0x{data[err.start]:02x} at byte offset {column} of the line (offset {err.start} in the file) "
        "is not valid UTF-8",
        path=path,
        line=_line_ends(data, err.start) + 1,
        field=_field_before(line_bytes[:column].decode("utf-8", errors="replace")),
        hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
    )


def _nul_error(path: Path, text: str) -> DataError:
    at = text.index("\x00")
    line_start = max(text.rfind("\n", 0, at), text.rfind("\r", 0, at)) + 1
    return DataError(
        f"NUL byte (0x00) at character {at - line_start} of the line: a text data file never holds one",
        path=path,
        line=_line_ends(text, at) + 1,
        field=_field_before(text[line_start:at]),
        hint="the file is binary or UTF-16 without a byte-order mark; re-encode it as UTF-8",
    )


def _field_before(prefix: str) -> str | None:
    """Best guess at the JSON field holding the text after `prefix` (a line's start): its last `"key":`."""
    keys = _JSON_KEY.findall(prefix)
    return _as_field(keys[-1]) if keys else None


def text_lines(text: str) -> list[str]:
    """Lines of `read_text`'s text, split on line ends only (str.splitlines would also split on U+2028
    inside JSON strings); a UTF-8 byte-order mark at a line's start is dropped (files joined with `cat`)."""
    lines = _universal_newlines(text).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    if "\ufeff" in text:
        lines = [line.removeprefix("\ufeff") for line in lines]
    return lines


# ---------------------------------------------------------------------------------------------------
# Text -> JSON, bounded


class _BadValue(ValueError):
    """Raised from inside the json module's hooks; parse_json turns it into a located DataError."""

    def __init__(self, message: str, field: str | None = None, long_int: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.long_int = long_int  # the hook cannot tell where the number is; _long_int_offset finds it


def _bounded_int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS + digits.startswith("-"):
        raise _BadValue(
            f"a JSON integer of {len(digits)} digits (more than {MAX_INT_DIGITS}): no id or label "
            "is that long",
            long_int=True,
        )
    return int(digits)


def _object(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):  # the json module would silently keep the last value
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _BadValue(
                    f"the key {shorten(key)} appears twice in one object, so which value is meant is unclear",
                    field=_as_field(key),
                )
            seen.add(key)
    return record


def _as_field(key: str) -> str:
    """A key as DataError.field: itself when short and printable, else its shortened repr."""
    return key if len(key) <= 40 and key.isprintable() else shorten(key, 40)


def _object_without_surrogates(pairs: list[tuple[str, object]]) -> dict:
    """Used only when the text holds a surrogate escape: checking every string costs a walk."""
    for key, value in pairs:
        if _has_lone_surrogate(key) or _has_lone_surrogate(value):
            raise _BadValue(
                "holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text "
                "and breaks tokenizers",
                field=_as_field(key),
            )
    return _object(pairs)


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return _LONE_SURROGATE.search(value) is not None
    if isinstance(value, list):  # objects inside are checked by their own hook call
        return any(_has_lone_surrogate(item) for item in value)
    return False


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=_bounded_int)
_SURROGATE_CHECKING_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_surrogates, parse_int=_bounded_int
)


def parse_json(text: str, path: str | Path, line: int | None = None) -> object:
    """One JSON value, every problem a DataError: syntax, nesting, huge integers, duplicate keys, lone
    surrogates. `line`: the file line `text` is (jsonl); None when `text` is the whole file, whose lines
    are then found from the error's position (or the offending list item's)."""
    decoder = _SURROGATE_CHECKING_DECODER if _SURROGATE_ESCAPE.search(text) else _DECODER
    try:
        value = decoder.decode(text)
    except RecursionError:  # the json module's C scanner gives up cleanly at the interpreter's limit
        raise _too_deep(text, path, line) from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"not valid JSON at column {err.colno}: {err.msg}",
            path=path,
            line=line if line is not None else err.lineno,
            hint="each line of a .jsonl file must be one complete JSON object" if line is not None else None,
        ) from None
    except _BadValue as err:
        raise _located(err, text, path, line, decoder) from None
    except ValueError as err:  # not expected after the hooks above; still never a traceback
        raise DataError(f"cannot parse the JSON: {err}", path=path, line=line) from None
    # The bound itself, checked on the parsed value (far cheaper than scanning a 50 MB text for brackets
    # outside strings); only text holding that many brackets at all can be that deep.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise _too_deep(text, path, line)
    return value


def _deeper_than(value: object, limit: int) -> bool:
    """Whether `value` nests more than `limit` lists/objects; iterative, so itself never recursing."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        kinds = set(map(type, children))  # in C: a list of 500 code tokens costs next to nothing
        if dict in kinds or list in kinds:
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_deep(text: str, path: str | Path, line: int | None) -> DataError:
    offset = _too_deep_at(text) or 0  # a scan of the text, on this error path only
    return DataError(
        f"JSON nested more than {MAX_JSON_DEPTH} levels deep",
        path=path,
        line=line if line is not None else _line_ends(text, offset) + 1,
        hint="a record is a flat object of strings, numbers and short lists",
    )


def _located(
    err: _BadValue, text: str, path: str | Path, line: int | None, decoder: json.JSONDecoder
) -> DataError:
    """A hook's complaint, placed: the huge integer itself, else the list item the hook rejected."""
    index = None
    if err.long_int:
        offset = _long_int_offset(text)
    elif line is None:
        index, offset = _failing_item(text, decoder)
    else:
        offset = 0
    line_start = text.rfind("\n", 0, offset) + 1
    return DataError(
        (f"record {index + 1}: " if index is not None else "") + err.message,
        path=path,
        line=line if line is not None else _line_ends(text, offset) + 1,
        field=err.field or (_field_before(text[line_start:offset]) if err.long_int else None),
    )


def _long_int_offset(text: str) -> int:
    """Offset of the first integer literal longer than MAX_INT_DIGITS outside strings (0 if none)."""
    for match in _JSON_STRING_OR_LONG_INT.finditer(text):
        if text[match.start()] != '"':
            return match.start()
    return 0


def _too_deep_at(text: str) -> int | None:
    """Offset of the first '[' or '{' nested deeper than MAX_JSON_DEPTH outside strings, or None."""
    depth = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return match.start()
        elif char in "]}":
            depth -= 1
    return None


def _failing_item(text: str, decoder: json.JSONDecoder) -> tuple[int | None, int]:
    """(index, offset) of the first item of a top-level list that `decoder` rejects; (None, offset of the
    value) when the text is not a list or the item cannot be found."""
    start = pos = _JSON_WS.match(text, 0).end()
    if not text.startswith("[", pos):
        return None, start
    pos += 1
    for index in count():
        pos = _JSON_WS.match(text, pos).end()
        item = pos
        try:
            _, pos = decoder.raw_decode(text, pos)
        except _BadValue:
            return index, item
        except ValueError:  # a syntax error before the bad value: name the list's start
            return None, start
        pos = _JSON_WS.match(text, pos).end()
        if not text.startswith(",", pos):
            break
        pos += 1
    return None, start


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; an empty file or a bad line is a DataError."""
    seen_any = False
    for line_no, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        seen_any = True
        yield line_no, parse_json(line, path, line_no)
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
    value = parse_json(text, path)
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
    pos = _JSON_WS.match(text, 0).end() + 1  # past '['
    offsets: list[int] = []
    while True:
        pos = _JSON_WS.match(text, pos).end()
        if text[pos] == "]":
            return offsets
        offsets.append(pos)
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _JSON_WS.match(text, pos).end()
        if text[pos] == ",":
            pos += 1


def json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------------
# Folders -> split files


def order_splits(names: Iterable[str]) -> list[str]:
    """train, valid, dev, test first (in that order), then any others alphabetically."""
    unique = set(names)
    known = [name for name in CANONICAL_SPLITS if name in unique]
    return known + sorted(unique - set(known))


# Split files found while a `listing_cache()` block runs: reading N splits of one folder lists and matches
# it once, not once per split (`data inspect` of 400 split files listed and matched the folder 800 times).
_SPLIT_FILES: ContextVar[dict[tuple[Path, tuple[str, ...]], dict[str, Path]] | None] = ContextVar(
    "_SPLIT_FILES", default=None
)


@contextmanager
def listing_cache() -> Iterator[None]:
    """Within the block, each data folder's split files are found once (the caller reads, not writes)."""
    token = _SPLIT_FILES.set({})
    try:
        yield
    finally:
        _SPLIT_FILES.reset(token)


def _folder_entries(root: Path) -> list[Path]:
    if not root.is_dir():
        problem = (
            "is a file, but a data folder is expected" if root.exists() else "data folder does not exist"
        )
        raise DataError(problem, path=root)
    try:
        return sorted(root.iterdir())
    except OSError as err:
        raise DataError(f"cannot list the data folder: {err.strerror}", path=root) from None


def split_files(root: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """split name -> file, for entries named `<split><suffix>` directly under `root`.

    Two files of one split (`train.jsonl` and `train.jsonl.gz`) are a DataError naming both: which one
    is meant is the user's call, not ours. A folder with such a name is listed too, so that reading it
    says it is a folder, not that the split is missing."""
    cache = _SPLIT_FILES.get()
    key = (root, tuple(suffixes))
    if cache is not None and key in cache:
        return cache[key]
    found: dict[str, Path] = {}
    for path in _folder_entries(root):
        name = path.name
        for suffix in suffixes:
            if not (name.endswith(suffix) and len(name) > len(suffix)):
                continue
            split = name[: -len(suffix)]
            other = found.setdefault(split, path)
            if other is not path:
                raise DataError(
                    f"two files for split {shorten(split, 40)}: {shorten(other.name)} and "
                    f"{shorten(name)}; which one to read is ambiguous",
                    path=root,
                    hint="remove or rename one of them",
                )
    if cache is not None:
        cache[key] = found
    return found


def split_file(root: Path, split: str, suffixes: Sequence[str], format_name: str) -> Path:
    """The file of one split, or a DataError naming the file that was expected."""
    files = split_files(root, suffixes)
    path = files.get(split)
    if path is None:
        raise DataError(
            f"split file for {shorten(split, 40)} not found "
            f"(splits present: {shorten_list(order_splits(files), quoted=False) or 'none'})",
            path=root / f"{split}{suffixes[0]}",
            hint=f"the {format_name} format expects {' or '.join(split + s for s in suffixes)}",
        )
    return path
