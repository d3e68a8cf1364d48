"""Property-based: whatever bytes a reader's files hold, reading gives sound data or ONE located DataError.

Every reader in the format registry is fuzzed (a new one is picked up automatically; it needs a fixture
writer, which `test_every_reader_has_a_fixture_to_fuzz` demands). Line-end style and byte-order marks
must not change what is read at all; beyond that, three kinds of input, each put into one file of a
small valid dataset written by the project's fixture writer:
- random bytes (and random text, and random JSON-ish characters);
- random JSON values, hostile ones included (huge integers, lone surrogates, NaN, deep nesting, duplicate
  keys), in place of a record, of a record's field, or of a line;
- mutations of the valid file: flipped, inserted and deleted bytes, truncation, swapped and repeated lines,
  other line ends, gzip (then damaged).

Example counts come from the hypothesis profile (tests/conftest.py: "ci" in `make test`, "fuzz" in
`make fuzz`); nothing here raises them.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtpeft.data.example import Example
from mtpeft.data.fixtures import FIXTURE_TASKS, write_fixture_dataset
from mtpeft.data.formats import FORMATS, load_split
from mtpeft.errors import DataError
from mtpeft.tasks import get_task
from mtpeft.tasks.kinds import kind_of
from mtpeft.tasks.spec import TaskSpec

pytestmark = pytest.mark.fuzz

READERS = sorted(FORMATS)
SPLIT = "train"
ROWS = 4  # records per file: small, so a mutation often lands in a record's structure
# Problems of a whole file, which name no line.
WHOLE_FILE = ("file is empty", "the JSON list is empty", "not a valid gzip file", "lines but")
LINE_END = re.compile(rb"\r\n|\r|\n")

# ---------------------------------------------------------------------------------------------------
# The valid dataset each input starts from

Dataset = dict[str, bytes]  # file name -> content of one dataset folder


class ValidFiles(dict):
    """format -> Dataset; a short repr, as hypothesis prints it with every failing example."""

    def __repr__(self) -> str:
        return f"<valid fixture datasets of {', '.join(self)}>"


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory: pytest.TempPathFactory) -> ValidFiles:
    """format -> the train split (and shared files) of a fixture dataset, as bytes."""
    root = tmp_path_factory.mktemp("valid")
    datasets = ValidFiles()
    for name in READERS:
        folder = write_fixture_dataset(name, root, n_per_split=ROWS)
        load_split(get_task(FIXTURE_TASKS[name]), folder, SPLIT)  # the starting point must be valid
        datasets[name] = {
            path.name: path.read_bytes()
            for path in sorted(folder.iterdir())
            if path.name.split(".")[0] not in ("valid", "test")
        }
    return datasets


def scratch_space() -> str | None:
    """RAM-backed temp space where there is one: a run writes thousands of tiny datasets, and /tmp on
    a disk makes that several times slower."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def read_dataset(
    format_name: str, files: Dataset, check: Callable[[list[Example] | DataError, Path], None]
) -> None:
    """Write `files` to a fresh folder (fresh, so no cache keyed on path and mtime sees an old file) and
    hand what reading its split gives, examples or a DataError, to `check`."""
    with tempfile.TemporaryDirectory(dir=scratch_space()) as tmp:
        folder = Path(tmp)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        try:
            result: list[Example] | DataError = load_split(
                get_task(FIXTURE_TASKS[format_name]), folder, SPLIT
            )
        except DataError as err:
            result = err
        check(result, folder)


def check_reading(format_name: str, files: Dataset) -> None:
    """Reading gives sound data or a located DataError; any other exception fails the test."""

    def check(result: list[Example] | DataError, folder: Path) -> None:
        if isinstance(result, DataError):
            assert_located(result, folder)
        else:
            assert_sound(result, get_task(FIXTURE_TASKS[format_name]))

    read_dataset(format_name, files, check)


def assert_located(err: DataError, folder: Path) -> None:
    message = str(err)
    message.encode("utf-8")  # printable: no lone surrogate from the input leaks into the message
    assert len(message) < 1500, f"a message is one readable line, not a dump of the input: {message[:300]}"
    assert err.path is not None, message
    path = Path(err.path)
    assert path == folder or path.parent == folder, message
    if not path.is_file():
        return  # a missing file or split: nothing to point into
    if err.line is None:
        assert any(problem in err.reason for problem in WHOLE_FILE), f"no line in: {message}"
    elif path.suffix != ".gz":
        lines = len(LINE_END.split(path.read_bytes()))
        assert 1 <= err.line <= lines, f"line {err.line} of a {lines}-line file: {message}"


def assert_sound(examples: list[Example], task: TaskSpec) -> None:
    assert examples
    for example in examples:
        assert example.code.strip()
        texts = [example.id, example.code, example.code_b, example.id_b, example.query, example.target]
        for text in [*texts, example.group, *example.meta.values()]:
            if text is not None:
                assert isinstance(text, str)
                text.encode("utf-8")  # a lone surrogate here would crash the tokenizer later
        if kind_of(task).labelled:
            assert example.label is not None and 0 <= example.label < task.num_labels
        else:
            assert example.label is None
    keys = [(example.id, example.id_b) for example in examples]
    assert len(set(keys)) == len(keys), "ids are unique within a split"


def test_every_reader_has_a_fixture_to_fuzz():
    assert set(READERS) <= set(FIXTURE_TASKS), "add a fixture writer and task for the new reader"


# ---------------------------------------------------------------------------------------------------
# 0. What must not change the data: line-end style and byte-order marks


@pytest.mark.parametrize("format_name", READERS)
@given(data=st.data())
def test_line_ends_and_byte_order_marks_do_not_change_the_data(format_name, valid_files, data):
    """Each file saved with '\\n', '\\r\\n' or old-Mac '\\r' line ends, with or without a UTF-8 BOM,
    reads as the same examples (a CR-only file used to be one record)."""
    valid = valid_files[format_name]
    changed = {}
    for name, content in valid.items():
        line_end = data.draw(st.sampled_from([b"\n", b"\r\n", b"\r"]), label=f"{name} line end")
        bom = b"\xef\xbb\xbf" if data.draw(st.booleans(), label=f"{name} BOM") else b""
        changed[name] = bom + content.replace(b"\n", line_end)
    results = []
    for files in (valid, changed):
        read_dataset(format_name, files, lambda result, _: results.append(result))
    assert isinstance(results[0], list) and results[1] == results[0]


# ---------------------------------------------------------------------------------------------------
# 1. Random bytes

JSONISH = st.text(alphabet='{}[]",:0123456789-.eE \t\r\n\\utrfalsnNI\ufeff\u2028\x00', max_size=200)
RANDOM_CONTENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
    JSONISH.map(lambda text: text.encode("utf-8")),
)


@pytest.mark.parametrize("format_name", READERS)
@given(data=st.data())
def test_random_bytes_give_data_or_a_located_error(format_name, valid_files, data):
    valid = valid_files[format_name]
    file_name = data.draw(st.sampled_from(sorted(valid)), label="file")
    check_reading(format_name, {**valid, file_name: data.draw(RANDOM_CONTENT, label="content")})


# ---------------------------------------------------------------------------------------------------
# 2. Random JSON values


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: what json.dumps will not write (huge integers, lone surrogates...)."""

    text: str

    def __repr__(self) -> str:  # short, in hypothesis' report of a failing example
        return f"Raw({self.text[:30]!r}{'...' if len(self.text) > 30 else ''})"


HOSTILE = st.sampled_from(
    [
        Raw("9" * 5000),
        Raw("-" + "1" * 41),
        Raw("1" * 40),
        Raw('"\\ud800"'),
        Raw('"x\\udc00"'),
        Raw('"\\ud83d\\ude00"'),  # a valid pair: an emoji
        Raw("NaN"),
        Raw("Infinity"),
        Raw("-Infinity"),
        Raw("1e400"),
        Raw("1.0"),
        Raw("true"),
        Raw("[" * 70 + "]" * 70),
        Raw("[" * 60 + "]" * 60),
        Raw('{"a": 1, "a": 2}'),
        Raw('"\\u0000"'),
        Raw('"a\\nb"'),
    ]
)
# Leaves include the empty list and object, so the containers below need not be empty (hypothesis warns
# about an `extend` that could ignore its argument).
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["", [], {}]),
    HOSTILE,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, min_size=1, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, min_size=1, max_size=4)
    ),
    max_leaves=10,
)


def dump(value: object, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ", ".join(dump(item, ascii_only) for item in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{json.dumps(key, ensure_ascii=ascii_only)}: {dump(item, ascii_only)}"
            for key, item in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return json.dumps(value, ensure_ascii=ascii_only)


def changed_record(data: st.DataObject, record: object) -> object:
    """A valid record with one field replaced by a random value, dropped, or added; or any value."""
    if not isinstance(record, dict) or data.draw(st.integers(0, 4), label="whole record") == 0:
        return data.draw(JSON_VALUES, label="record")
    record = dict(record)
    key = data.draw(st.sampled_from([*sorted(record), "extra"]), label="key")
    if data.draw(st.booleans(), label="drop"):
        record.pop(key, None)
    else:
        record[key] = data.draw(JSON_VALUES, label="value")
    return record


def json_change(data: st.DataObject, file_name: str, content: bytes) -> str:
    ascii_only = data.draw(st.booleans(), label="ascii")
    text = content.decode("utf-8")
    lines = text.splitlines()
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    if file_name.endswith(".json"):  # one JSON list of records
        records = json.loads(text)
        if data.draw(st.integers(0, 5), label="whole file") == 0:
            return dump(data.draw(JSON_VALUES, label="file"), ascii_only)
        index = data.draw(st.integers(0, len(records) - 1), label="item")
        records[index] = changed_record(data, records[index])
        return "[\n" + ",\n".join(dump(record, ascii_only) for record in records) + "\n]\n"
    if file_name.endswith(".jsonl"):
        lines[index] = dump(changed_record(data, json.loads(lines[index])), ascii_only)
    else:  # a text line, or one tab-separated column of it
        columns = lines[index].split("\t")
        column = data.draw(st.integers(0, len(columns) - 1), label="column")
        columns[column] = dump(data.draw(JSON_VALUES, label="value"), ascii_only)
        lines[index] = "\t".join(columns)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("format_name", READERS)
@given(data=st.data())
def test_random_json_values_give_data_or_a_located_error(format_name, valid_files, data):
    valid = valid_files[format_name]
    file_name = data.draw(st.sampled_from(sorted(valid)), label="file")
    content = json_change(data, file_name, valid[file_name])
    check_reading(format_name, {**valid, file_name: content.encode("utf-8", errors="surrogatepass")})


# ---------------------------------------------------------------------------------------------------
# 3. Mutations of valid files

SPECIAL_BYTES = [
    b"\xef\xbb\xbf",  # UTF-8 byte-order mark
    b"\xff\xfe",  # UTF-16 byte-order mark
    b"\x00",
    b"\xff",
    b"\xed\xa0\x80",  # a surrogate encoded as UTF-8: not valid UTF-8
    b"\xe2\x80\xa8",  # U+2028, a line separator that is not a line end
    b"\\ud800",
    b"\r",
    b"\r\n",
    b"\n",
    b"\t",
    b'"',
    b"\\",
    b"NaN",
    b"true",
    b"9" * 5000,
    b"[" * 100,
]
POSITION = st.integers(0, 10**6)  # taken modulo the length
OPS = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
    st.tuples(
        st.just("insert"), POSITION, st.binary(min_size=1, max_size=8) | st.sampled_from(SPECIAL_BYTES)
    ),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 40)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("swap lines"), POSITION, POSITION),
    st.tuples(st.just("repeat line"), POSITION),
    st.tuples(st.just("line ends"), st.sampled_from([b"\r", b"\r\n", b"\n\n"])),
)


def mutate(content: bytes, op: tuple) -> bytes:
    kind, *args = op
    if kind in ("swap lines", "repeat line", "line ends"):
        return mutate_lines(content, kind, args)
    at = args[0] % (len(content) + 1)
    if kind == "flip":
        return (
            content
            if at == len(content)
            else content[:at] + bytes([content[at] ^ 1 << args[1]]) + content[at + 1 :]
        )
    if kind == "insert":
        return content[:at] + args[1] + content[at:]
    if kind == "delete":
        return content[:at] + content[at + args[1] :]
    return content[:at]  # truncate


def mutate_lines(content: bytes, kind: str, args: list) -> bytes:
    lines = content.split(b"\n")
    if kind == "line ends":
        return args[0].join(lines)
    i = args[0] % len(lines)
    if kind == "repeat line":
        lines.insert(i, lines[i])
    else:
        j = args[1] % len(lines)
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def gzipped(content: bytes, damage: int | None) -> bytes:
    """`content` compressed; `damage`: a byte of the compressed data to flip."""
    compressed = gzip.compress(content, mtime=0)
    if damage is None:
        return compressed
    at = damage % len(compressed)
    return compressed[:at] + bytes([compressed[at] ^ 0x5A]) + compressed[at + 1 :]


@functools.cache
def reads_gzip(format_name: str, file_name: str) -> bool:
    """Whether the reader takes `<file_name>.gz` for the split (asked of the registry's reader)."""
    with tempfile.TemporaryDirectory(dir=scratch_space()) as probe:
        (Path(probe) / (file_name + ".gz")).write_bytes(b"")
        return file_name.startswith(SPLIT + ".") and SPLIT in FORMATS[format_name].splits(Path(probe))


@pytest.mark.parametrize("format_name", READERS)
@given(data=st.data())
def test_mutated_valid_files_give_data_or_a_located_error(format_name, valid_files, data):
    valid = valid_files[format_name]
    file_name = data.draw(st.sampled_from(sorted(valid)), label="file")
    content = valid[file_name]
    for op in data.draw(st.lists(OPS, min_size=1, max_size=4), label="ops"):
        content = mutate(content, op)
    files = {**valid, file_name: content}
    if reads_gzip(format_name, file_name) and data.draw(st.booleans(), label="gzip"):
        damage = data.draw(st.none() | POSITION, label="damage")
        files[file_name + ".gz"] = gzipped(files.pop(file_name), damage)
    check_reading(format_name, files)
