"""Inputs a hostile tester found: each gives data, or one DataError naming file, line and field; never a
traceback, a hang, or wrong data read silently. (The property-based side is test_readers_fuzz.py.)"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.cli.main import app
from mtpeft.data.fixtures import FIXTURE_TASKS, write_fixture_dataset
from mtpeft.data.formats import load_split
from mtpeft.data.formats.textio import MAX_INT_DIGITS, MAX_JSON_DEPTH
from mtpeft.errors import DataError
from mtpeft.tasks import get_task
from mtpeft.tasks.spec import LABEL_RULE

HUGE = "9" * 5000  # past Python's 4300-digit limit for int <-> str


def devign(idx: int | str, **changes: object) -> str:
    record = {"project": "p", "commit_id": "c", "target": 0, "func": f"int f{idx}() {{ return {idx}; }}"}
    return json.dumps({**record, "idx": idx, **changes})


def raw_devign(idx: int, **raw_fields: str) -> str:
    """A devign-jsonl line whose given fields hold raw JSON text (what json.dumps would never write)."""
    fields = {"func": json.dumps(f"int f{idx}();"), "target": "0", "idx": str(idx), **raw_fields}
    return "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (root / name).write_bytes(data)
    return root


def read_error(task: str, root: Path, split: str = "train") -> DataError:
    with pytest.raises(DataError) as caught:
        load_split(get_task(task), root, split)
    message = str(caught.value)
    assert len(message) < 1000, "one readable line, not a dump of the input"
    message.encode("utf-8")  # printable: no lone surrogate in it
    return caught.value


def assert_at(error: DataError, root: Path, file: str, line: int | None, field: str | None) -> None:
    assert (Path(error.path), error.line, error.field) == (root / file, line, field), str(error)


# ---------------------------------------------------------------------------------------------------
# 1. Deep nesting


def test_deeply_nested_json_line_is_a_located_error_and_fast(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000  # was RecursionError
    write(tmp_path, {"train.jsonl": devign(0) + "\n" + raw_devign(1, extra=deep) + "\n"})
    started = time.perf_counter()
    error = read_error("vulnerability", tmp_path)
    assert time.perf_counter() - started < 1.0
    assert_at(error, tmp_path, "train.jsonl", 2, None)
    assert f"nested more than {MAX_JSON_DEPTH} levels" in str(error)


def test_deeply_nested_json_list_file_names_the_line(tmp_path):
    record = json.dumps({"code": "@Test void a() {}", "label": 0, "test_name": "t1"})
    write(tmp_path, {"train.json": f"[\n{record},\n" + "[" * 5000 + "]" * 5000 + "\n]"})
    assert_at(read_error("flaky", tmp_path), tmp_path, "train.json", 3, None)


def test_nesting_within_the_limit_is_still_data(tmp_path):
    nested = "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)  # inside a record: 64 levels
    write(tmp_path, {"train.jsonl": raw_devign(0, extra=nested) + "\n"})
    assert len(load_split(get_task("vulnerability"), tmp_path, "train")) == 1


# ---------------------------------------------------------------------------------------------------
# 2. Integers with thousands of digits


def test_thousand_digit_label_in_jsonl_names_line_and_field(tmp_path):
    write(tmp_path, {"train.jsonl": devign(0) + "\n" + raw_devign(1, target=HUGE) + "\n"})
    error = read_error("vulnerability", tmp_path)  # was ValueError (int max str digits)
    assert_at(error, tmp_path, "train.jsonl", 2, "target")
    assert f"integer of 5000 digits (more than {MAX_INT_DIGITS})" in str(error)


def test_thousand_digit_id_in_a_json_list_names_its_line(tmp_path):
    records = (
        '[\n{"code": "a", "label": 0, "test_name": "t1"},\n'
        f'{{"code": "b", "label": 0,\n "test_name": {HUGE}}}\n]'
    )
    write(tmp_path, {"train.json": records})
    assert_at(read_error("flaky", tmp_path), tmp_path, "train.json", 4, "test_name")


def test_thousand_digit_function_id_in_bigclonebench_data_jsonl(tmp_path):
    write(tmp_path, {"data.jsonl": f'{{"func": "void a() {{}}", "idx": {HUGE}}}\n', "train.txt": "1\t2\t1\n"})
    assert_at(read_error("clone", tmp_path), tmp_path, "data.jsonl", 1, "idx")


@pytest.mark.parametrize(
    "line",
    ['{"' + "k" * 5000 + '": ' + HUGE + "}", '{"' + "k" * 5000 + '": "a\x00"}'],
    ids=["huge-integer", "nul-byte"],
)
def test_field_guessed_from_a_huge_key_is_cut_short(tmp_path, line):
    write(tmp_path, {"train.jsonl": devign(0) + "\n" + line + "\n"})  # found by `make fuzz`
    error = read_error("vulnerability", tmp_path)
    assert error.line == 2 and error.field.startswith("'kkkk") and len(error.field) <= 40


@pytest.mark.parametrize(
    ("column", "pair", "field"),
    [("label", f"1\t2\t{HUGE}", "label"), ("idx2", f"1\t{HUGE}\t1", "idx2")],
    ids=["label", "id"],
)
def test_thousand_digit_column_in_bigclonebench_pair_file_is_short_located_error(
    tmp_path, column, pair, field
):
    data = '{"func": "void a() {}", "idx": "1"}\n{"func": "void b() {}", "idx": "2"}\n'
    write(tmp_path, {"data.jsonl": data, "train.txt": f"1\t2\t0\n{pair}\n"})
    error = read_error("clone", tmp_path)  # the message used to quote all 5000 digits
    assert_at(error, tmp_path, "train.txt", 2, field)
    assert "9999..." in str(error)


def test_thousand_digit_devign_index_is_out_of_range_not_a_traceback(tmp_path):
    write(tmp_path, {"function.json": '[{"func": "int a;", "target": 0}]', "train.txt": f"0\n{HUGE}\n"})
    error = read_error("vulnerability-devign-json", tmp_path)  # was ValueError from int()
    assert_at(error, tmp_path, "train.txt", 2, None)
    assert "is out of range: function.json holds 1 records" in str(error)


def test_devign_index_with_leading_zeros_is_still_read(tmp_path):
    functions = json.dumps([{"func": f"int f{i};", "target": i % 2} for i in range(12)])
    write(tmp_path, {"function.json": functions, "train.txt": "0011\n0\n"})
    examples = load_split(get_task("vulnerability-devign-json"), tmp_path, "train")
    assert [example.code for example in examples] == ["int f11;", "int f0;"]


# ---------------------------------------------------------------------------------------------------
# 3. Lone UTF-16 surrogates


def test_lone_surrogate_escape_in_code_is_rejected_with_line_and_field(tmp_path):
    write(tmp_path, {"train.jsonl": devign(0) + "\n" + raw_devign(1, func='"int x = \\ud800;"') + "\n"})
    error = read_error("vulnerability", tmp_path)  # was read, then crashed the tokenizer
    assert_at(error, tmp_path, "train.jsonl", 2, "func")
    assert "lone UTF-16 surrogate" in str(error)


def test_lone_low_surrogate_in_a_json_list_names_the_record_line(tmp_path):
    records = (
        '[\n{"code": "a", "label": 0, "test_name": "t1"},\n'
        '{"code": "\\udc00b", "label": 1, "test_name": "t2"}\n]'
    )
    write(tmp_path, {"train.json": records})
    assert_at(read_error("flaky", tmp_path), tmp_path, "train.json", 3, "code")


def test_surrogate_pair_escape_is_an_emoji_not_an_error(tmp_path):
    write(tmp_path, {"train.jsonl": raw_devign(0, func='"s = \\"\\ud83d\\ude00\\";"') + "\n"})
    (example,) = load_split(get_task("vulnerability"), tmp_path, "train")
    assert example.code == 's = "\U0001f600";'


# ---------------------------------------------------------------------------------------------------
# 4. Old-Mac CR-only line ends


def test_cr_only_jsonl_reads_every_record(tmp_path):
    write(tmp_path, {"train.jsonl": "".join(devign(i, target=i % 2) + "\r" for i in range(3))})
    examples = load_split(get_task("vulnerability"), tmp_path, "train")  # was one record, then a JSON error
    assert [(e.id, e.label) for e in examples] == [("0", 0), ("1", 1), ("2", 0)]


def test_cr_only_file_errors_name_the_right_line(tmp_path):
    write(tmp_path, {"train.jsonl": f"{devign(0)}\r{devign(1)}\r\n{devign(2, func=5)}\r"})
    assert_at(read_error("vulnerability", tmp_path), tmp_path, "train.jsonl", 3, "func")


def test_cr_only_index_and_pair_files_read_every_line(tmp_path):
    functions = json.dumps([{"func": "int a;", "target": 0}, {"func": "int b;", "target": 1}])
    devign_root = write(tmp_path / "devign", {"function.json": functions, "train.txt": "0\r1\r"})
    assert len(load_split(get_task("vulnerability-devign-json"), devign_root, "train")) == 2
    data = '{"func": "void a() {}", "idx": "1"}\r{"func": "void b() {}", "idx": "2"}\r'
    bcb_root = write(tmp_path / "bcb", {"data.jsonl": data, "train.txt": "1\t2\t1\r2\t1\t0\r"})
    assert [(e.id, e.id_b, e.label) for e in load_split(get_task("clone"), bcb_root, "train")] == [
        ("1", "2", 1),
        ("2", "1", 0),
    ]


def test_code_refinement_with_cr_only_buggy_and_lf_fixed_stays_line_aligned(tmp_path):
    files = {"train.buggy-fixed.buggy": "a - 1 ;\rb - 2 ;\r", "train.buggy-fixed.fixed": "a + 1 ;\nb + 2 ;\n"}
    examples = load_split(get_task("repair"), write(tmp_path, files), "train")  # was one 2-method line
    assert [(e.code, e.target) for e in examples] == [("a - 1 ;", "a + 1 ;"), ("b - 2 ;", "b + 2 ;")]


def test_unicode_line_separator_inside_a_jsonl_string_is_not_a_line_end(tmp_path):
    write(tmp_path, {"train.jsonl": devign(0, func="int a;\u2028int b;").replace("\\u2028", "\u2028") + "\n"})
    (example,) = load_split(get_task("vulnerability"), tmp_path, "train")
    assert example.code == "int a;\u2028int b;"


# ---------------------------------------------------------------------------------------------------
# 5. Labels: strict types


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("true", "label true is a JSON boolean"),
        ("false", "label false is a JSON boolean"),
        ("1.0", "label 1.0 is a JSON decimal number"),
        ("1.5", "label 1.5 is a JSON decimal number"),
        ("NaN", "label NaN is a JSON decimal number"),
        ("Infinity", "label Infinity is a JSON decimal number"),
        ("null", "label null is a JSON null"),
        ("[1]", "label [1] is a JSON list"),
        ('{"v": 1}', "is a JSON object"),
    ],
    ids=["true", "false", "float-1.0", "float-1.5", "nan", "infinity", "null", "list", "object"],
)
def test_sloppy_label_is_rejected_with_the_rule(tmp_path, raw, shown):
    write(tmp_path, {"train.jsonl": devign(0) + "\n" + raw_devign(1, target=raw) + "\n"})
    error = read_error("vulnerability", tmp_path)  # `true` and 1.0 used to read as label "1"
    assert_at(error, tmp_path, "train.jsonl", 2, "target")
    assert shown in str(error) and LABEL_RULE in str(error)


def test_integer_label_matches_its_digit_string_and_spaces_are_ignored(tmp_path):
    lines = [devign(0, target=1), devign(1, target="0"), devign(2, target=" 1 ")]
    write(tmp_path, {"train.jsonl": "\n".join(lines) + "\n"})
    assert [e.label for e in load_split(get_task("vulnerability"), tmp_path, "train")] == [1, 0, 1]


def test_integer_label_matches_a_digit_label_of_a_multiclass_task(tmp_path):
    records = [{"code": "return a[0];", "label": 1}, {"code": "for (;;) {}", "label": "n"}]
    write(tmp_path, {"train.jsonl": "".join(json.dumps(r) + "\n" for r in records)})
    examples = load_split(get_task("complexity"), tmp_path, "train")
    assert [get_task("complexity").labels[e.label] for e in examples] == ["1", "n"]


def test_the_formats_page_documents_the_label_rule():
    page = (Path(__file__).resolve().parents[2] / "docs" / "tasks.md").read_text(encoding="utf-8")
    section = page.split("## Supported task formats", 1)[1].split("\n## ", 1)[0]
    for accepted_or_not in ('`1` for `"1"`', "`true`", "`1.0`", "`NaN`", "`null`"):
        assert accepted_or_not in section


# ---------------------------------------------------------------------------------------------------
# 6. Files and folders


def test_duplicate_key_in_a_record_is_an_error_not_the_last_value(tmp_path):
    write(tmp_path, {"train.jsonl": raw_devign(0, target='0, "target": 1') + "\n"})
    error = read_error("vulnerability", tmp_path)  # json.loads silently kept target 1
    assert_at(error, tmp_path, "train.jsonl", 1, "target")
    assert "appears twice" in str(error)


def test_folder_named_like_the_split_file_says_it_is_a_folder(tmp_path):
    (tmp_path / "train.jsonl").mkdir()
    error = read_error("vulnerability", tmp_path)
    assert_at(error, tmp_path, "train.jsonl", None, None)
    assert "is a folder, but a file is expected" in str(error)


def test_folder_named_like_the_function_file_says_it_is_a_folder(tmp_path):
    write(tmp_path, {"train.txt": "1\t2\t1\n"})
    (tmp_path / "data.jsonl").mkdir()
    error = read_error("clone", tmp_path)  # said "function file not found"
    assert "is a folder, but a function file is expected" in str(error)


def test_file_given_as_the_data_folder_says_so(tmp_path):
    (tmp_path / "data").write_text("x")
    error = read_error("vulnerability", tmp_path / "data")
    assert Path(error.path) == tmp_path / "data" and "is a file, but a data folder is expected" in str(error)


def test_unreadable_file_is_a_located_error(tmp_path, monkeypatch):
    write(tmp_path, {"train.jsonl": devign(0) + "\n"})

    def denied(self: Path) -> bytes:  # chmod 000 does not stop root, which the tests may run as
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    error = read_error("vulnerability", tmp_path)
    assert Path(error.path) == tmp_path / "train.jsonl" and "Permission denied" in str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.timeout(20)
def test_named_pipe_named_like_a_data_file_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "train.jsonl")  # reading it would block forever
    assert "is not a regular file" in str(read_error("vulnerability", tmp_path))


@pytest.mark.parametrize(
    "content",
    [
        devign(0).encode() + b"\n",
        gzip.compress(devign(0).encode())[:10] + b"garbage",  # a gzip header, then no deflate data
        gzip.compress(devign(0).encode())[:-4],  # cut short
    ],
    ids=["plain-text", "damaged-body", "truncated"],
)
def test_gz_file_that_is_not_gzip_is_a_located_error(tmp_path, content):
    write(tmp_path, {"train.jsonl.gz": content})
    error = read_error("complexity", tmp_path)  # a damaged body raised zlib.error
    assert Path(error.path) == tmp_path / "train.jsonl.gz" and "not a valid gzip file" in str(error)


def test_utf16_file_is_named_as_utf16(tmp_path):
    write(tmp_path, {"train.jsonl": (devign(0) + "\n").encode("utf-16")})
    error = read_error("vulnerability", tmp_path)
    assert_at(error, tmp_path, "train.jsonl", 1, None)
    assert "UTF-16" in str(error) and "iconv -f utf-16" in str(error)


def test_nul_byte_in_a_line_aligned_file_is_an_error_not_code(tmp_path):
    files = {
        "train.buggy-fixed.buggy": "a - 1 ;\nb\x00 - 2 ;\n",
        "train.buggy-fixed.fixed": "a + 1 ;\nb + 2 ;\n",
    }
    error = read_error("repair", write(tmp_path, files))  # was read as code holding a NUL
    assert_at(error, tmp_path, "train.buggy-fixed.buggy", 2, None)
    assert "NUL byte" in str(error)


def test_byte_order_marks_at_file_and_line_starts_are_not_data(tmp_path):
    bom = "\ufeff"  # the second from `cat a.jsonl b.jsonl` of two files saved with one
    write(tmp_path, {"train.jsonl": f"{bom}{devign(0)}\n{bom}{devign(1)}\n"})
    assert [e.id for e in load_split(get_task("vulnerability"), tmp_path, "train")] == ["0", "1"]


def test_huge_single_line_gives_a_short_message(tmp_path):
    data = '{"func": "void a() {}", "idx": "1"}\n'
    write(tmp_path, {"data.jsonl": data, "train.txt": "1\t" * 2_000_000})  # 4 MB, no line end
    error = read_error("clone", tmp_path)
    assert_at(error, tmp_path, "train.txt", 1, None)
    assert "expected 3 tab-separated columns" in str(error)


def test_missing_field_message_lists_a_bounded_number_of_fields(tmp_path):
    record = {f"junk{i}": i for i in range(2000)} | {"target": 0}
    write(tmp_path, {"train.jsonl": json.dumps(record) + "\n"})
    error = read_error("vulnerability", tmp_path)
    assert_at(error, tmp_path, "train.jsonl", 1, "func")
    assert "and 1989 more" in str(error)


# ---------------------------------------------------------------------------------------------------
# User text is never console markup


def test_data_inspect_prints_markup_like_ids_and_folder_names_as_text(tmp_path):
    root = tmp_path / "[red]x[/red]"
    code = "int f() { return 1; }"  # the same code thrice: an exact-duplicate finding lists the three ids
    same = [devign(idx, func=code) for idx in ("[/bold]", "[red]x[/red]", "\x1b[2Jwipe")]
    write(root, {"train.jsonl": "\n".join([*same, devign("v3")]) + "\n", "test.jsonl": devign("v4") + "\n"})
    result = CliRunner().invoke(app, ["data", "inspect", "vulnerability", str(root)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output  # `[/bold]` raised rich.errors.MarkupError
    assert "[/bold], [red]x[/red], \\x1b[2Jwipe" in result.output  # as written; ESC shown, not sent
    assert "\x1b" not in result.output
    assert f"in {root}" in result.output.replace("\n", "")


@pytest.mark.parametrize("format_name", sorted(FIXTURE_TASKS))
def test_an_empty_file_in_any_format_is_named(tmp_path, format_name):
    folder = write_fixture_dataset(format_name, tmp_path, n_per_split=2)
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("valid", "test")):
            continue
        kept = path.read_bytes()
        path.write_bytes(b"")
        error = read_error(FIXTURE_TASKS[format_name], folder)
        assert path.name in str(error), f"emptied {path.name}: {error}"
        path.write_bytes(kept)
