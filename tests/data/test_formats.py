"""Every format reads its published layout back into the right Examples; user tasks need no code."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from mtpeft.data.example import Example
from mtpeft.data.fixtures import COMPLEXITY_MARKERS, FIXTURE_TASKS, MARKER, SPLITS, write_fixture_dataset
from mtpeft.data.formats import FORMATS, available_splits, get_format, load_split
from mtpeft.errors import ConfigError, DataError
from mtpeft.tasks import TaskKind, get_task
from mtpeft.tasks.spec import TaskSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLE_TASK = Path(__file__).resolve().parents[2] / "examples" / "tasks" / "my-task.yaml"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_every_registered_format_has_a_fixture_writer_and_a_builtin_task():
    assert set(FIXTURE_TASKS) == set(FORMATS)
    for format_name, task_name in FIXTURE_TASKS.items():
        assert get_task(task_name).format == format_name


@pytest.mark.parametrize("format_name", sorted(FIXTURE_TASKS))
def test_fixture_dataset_reads_back_with_every_split_and_id_unique(format_name, tmp_path):
    task = get_task(FIXTURE_TASKS[format_name])
    folder = write_fixture_dataset(format_name, tmp_path, n_per_split=10, seed=3)
    assert available_splits(task, folder) == list(SPLITS)
    for split in SPLITS:
        examples = load_split(task, folder, split)
        assert len(examples) == 10
        keys = [(example.id, example.id_b) for example in examples]
        assert len(set(keys)) == len(keys)
        assert all(example.code.strip() for example in examples)


@pytest.mark.parametrize("format_name", ["devign-jsonl", "devign-json", "flakeflagger-json"])
def test_binary_fixture_label_is_one_exactly_when_code_has_the_marker(format_name, tmp_path):
    task = get_task(FIXTURE_TASKS[format_name])
    folder = write_fixture_dataset(format_name, tmp_path, n_per_split=12)
    examples = load_split(task, folder, "train")
    assert all(example.label == int(MARKER in example.code) for example in examples)
    assert Counter(example.label for example in examples) == {0: 6, 1: 6}


def test_complexity_fixture_has_one_marker_per_label(tmp_path):
    task = get_task("complexity")
    examples = load_split(task, write_fixture_dataset("jsonl", tmp_path, n_per_split=15), "valid")
    assert {task.labels[example.label] for example in examples} == set(COMPLEXITY_MARKERS)
    assert all(COMPLEXITY_MARKERS[task.labels[example.label]] in example.code for example in examples)


def test_clone_fixture_pairs_are_balanced_and_join_two_functions(tmp_path):
    examples = load_split(get_task("clone"), write_fixture_dataset("bigclonebench", tmp_path), "test")
    assert Counter(example.label for example in examples) == {0: 8, 1: 8}
    assert all(example.code_b and example.id != example.id_b for example in examples)


def test_search_fixture_query_words_occur_in_its_code(tmp_path):
    examples = load_split(get_task("code-search"), write_fixture_dataset("codesearchnet", tmp_path), "train")
    for example in examples:
        verb, _, adjective, noun, _ = example.query.split()
        assert all(word in example.code for word in (verb, adjective, noun))


def test_fixture_is_deterministic_per_seed(tmp_path):
    first = (write_fixture_dataset("devign-jsonl", tmp_path / "a", seed=1) / "train.jsonl").read_text()
    again = (write_fixture_dataset("devign-jsonl", tmp_path / "b", seed=1) / "train.jsonl").read_text()
    other = (write_fixture_dataset("devign-jsonl", tmp_path / "c", seed=2) / "train.jsonl").read_text()
    assert first == again != other


def test_unknown_fixture_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no fixture writer for format 'nope'"):
        write_fixture_dataset("nope", tmp_path)


def test_devign_jsonl_maps_published_fields(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"project": "FFmpeg", "commit_id": "abc", "target": 1, "func": "int f() { return 0; }", "idx": 7},
            {"project": "qemu", "commit_id": "def", "target": 0, "func": "void g() {}", "idx": 8},
        ],
    )
    first, second = load_split(get_task("vulnerability"), tmp_path, "train")
    assert first == Example(id="7", code="int f() { return 0; }", label=1, group="FFmpeg")
    assert first.meta == {"commit_id": "abc"}
    assert (second.id, second.label, second.group) == ("8", 0, "qemu")


def test_devign_json_reads_the_original_release_layout():
    root = FIXTURES / "devign-json"
    task = get_task("vulnerability-devign-json")
    assert available_splits(task, root) == ["train", "valid", "test"]
    train = load_split(task, root, "train")
    records = json.loads((root / "function.json").read_text())
    assert [example.id for example in train] == ["0", "1", "2", "3"]
    assert [example.code for example in train] == [record["func"] for record in records[:4]]
    assert [example.label for example in train] == [0, 1, 1, 0]
    assert train[1].group == "qemu"
    assert load_split(task, root, "test")[0].meta["commit_id"] == records[5]["commit_id"]


def test_bigclonebench_joins_pairs_to_functions(tmp_path):
    write_jsonl(
        tmp_path / "data.jsonl", [{"func": "void a() {}", "idx": "10"}, {"func": "void b() {}", "idx": "11"}]
    )
    (tmp_path / "train.txt").write_text("10\t11\t1\n11\t10\t0\n")
    first, second = load_split(get_task("clone"), tmp_path, "train")
    assert first == Example(id="10", id_b="11", code="void a() {}", code_b="void b() {}", label=1)
    assert (second.code, second.code_b, second.label) == ("void b() {}", "void a() {}", 0)


def _csn_record(idx: int | None, url: str) -> dict:
    record = {
        "repo": "r",
        "path": "p.java",
        "func_name": "add",
        "language": "java",
        "code": "int add(int a, int b) { return a + b; }",
        "code_tokens": ["int", "add"],
        "docstring": "adds two numbers .",
        "docstring_tokens": ["adds"],
        "url": url,
    }
    return record if idx is None else {**record, "idx": idx}


def test_codesearchnet_retrieval_and_generation_read_the_same_file_differently(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [_csn_record(3, "u/3")])
    (search,) = load_split(get_task("code-search"), tmp_path, "test")
    (summary,) = load_split(get_task("summarization"), tmp_path, "test")
    assert (search.id, search.query, search.target) == ("3", "adds two numbers .", None)
    assert (summary.code, summary.target, summary.query) == (search.code, "adds two numbers .", None)
    assert search.meta == {"url": "u/3", "func_name": "add"}


def test_token_list_fields_are_joined_with_spaces_as_codexglue_does(tmp_path):
    # CodeXGLUE code-to-text trains on ' '.join(code_tokens) -> ' '.join(docstring_tokens), not on the
    # raw code and the whole docstring: a task YAML mapping those fields gets exactly that.
    record = _csn_record(3, "u/3") | {
        "docstring": "Adds two numbers.\n\n:param a: the first\n:param b: the second",
        "docstring_tokens": ["Adds", "two", "numbers", "."],
        "code_tokens": ["int", "add", "(", "int", "a", ",", "int", "b", ")"],
    }
    write_jsonl(tmp_path / "test.jsonl", [record])
    summarization = get_task("summarization")
    tokens = summarization.model_copy(
        update={"fields": {"code": "code_tokens", "target": "docstring_tokens"}}
    )
    (example,) = load_split(tokens, tmp_path, "test")
    assert (example.code, example.target) == ("int add ( int a , int b )", "Adds two numbers .")
    (raw,) = load_split(summarization, tmp_path, "test")
    assert raw.target == record["docstring"]  # the default stays the docstring's text


def test_codesearchnet_reads_gzip_and_falls_back_to_url_as_id(tmp_path):
    lines = "".join(json.dumps(_csn_record(None, f"github.com/x/{i}")) + "\n" for i in range(2))
    (tmp_path / "valid.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    task = get_task("code-search")
    assert available_splits(task, tmp_path) == ["valid"]
    assert [example.id for example in load_split(task, tmp_path, "valid")] == [
        "github.com/x/0",
        "github.com/x/1",
    ]


def test_flakeflagger_uses_test_name_as_id_and_project_as_group(tmp_path):
    records = [{"code": "@Test void t(){}", "label": 1, "project": "p1", "test_name": "a.B-t"}]
    (tmp_path / "train.json").write_text(json.dumps(records))
    (example,) = load_split(get_task("flaky"), tmp_path, "train")
    assert (example.id, example.group, example.label) == ("a.B-t", "p1", 1)


def test_generic_jsonl_uses_idx_when_present_else_the_line(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl", [{"idx": "x9", "code": "a", "label": "n"}, {"code": "b", "label": "logn"}]
    )
    first, second = load_split(get_task("complexity"), tmp_path, "train")
    assert (first.id, first.label) == ("x9", 2)
    assert (second.id, second.label) == ("train:2", 1)


def test_code_refinement_pairs_lines_and_strips_trailing_space(tmp_path):
    (tmp_path / "train.buggy-fixed.buggy").write_text("a ( ) - b \nc < d \n")
    (tmp_path / "train.buggy-fixed.fixed").write_text("a ( ) + b \nc <= d \n")
    examples = load_split(get_task("repair"), tmp_path, "train")
    assert [(e.code, e.target) for e in examples] == [("a ( ) - b", "a ( ) + b"), ("c < d", "c <= d")]


def test_blank_lines_and_crlf_at_the_end_of_a_jsonl_are_fine(tmp_path):
    record = json.dumps({"func": "f", "target": 0, "idx": 1, "project": "p"})
    (tmp_path / "train.jsonl").write_bytes(f"{record}\r\n\r\n\n".encode())
    assert len(load_split(get_task("vulnerability"), tmp_path, "train")) == 1


def test_user_task_yaml_with_renamed_fields_needs_no_code(tmp_path):
    data = tmp_path / "my-data"
    data.mkdir()
    write_jsonl(
        data / "train.jsonl",
        [
            {"source": "eval(input())", "is_bad": 1, "uid": "u1"},  # an integer matches label "1"
            {"source": "print(1)", "is_bad": "0", "uid": "u2"},
        ],
    )
    task_file = tmp_path / "risky-eval.yaml"
    task_file.write_text(
        "name: risky-eval\nkind: binary\nformat: jsonl\ndata: my-data\n"
        "fields: {code: source, label: is_bad, id: uid}\n"
        'labels: ["0", "1"]\nmetrics: [f1, accuracy]\n'
    )
    task = get_task(str(task_file))
    examples = load_split(task, None, "train")  # data folder taken from the YAML, relative to it
    assert [(e.id, e.code, e.label) for e in examples] == [("u1", "eval(input())", 1), ("u2", "print(1)", 0)]


def test_user_pair_task_on_generic_jsonl(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"left": "f()", "right": "g()", "same": "yes"}])
    task = TaskSpec(
        name="same-behaviour",
        kind=TaskKind.PAIR,
        format="jsonl",
        fields={"code": "left", "code_b": "right", "label": "same"},
        labels=["no", "yes"],
        metrics=["f1"],
    )
    (example,) = load_split(task, tmp_path, "train")
    assert (example.code, example.code_b, example.label) == ("f()", "g()", 1)


def test_user_task_with_a_misspelled_field_is_told_where_to_fix_it(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"source": "x = 1", "is_bad": 0}])
    fields = {"code": "sourse", "label": "is_bad"}
    task = TaskSpec(
        name="t", kind=TaskKind.BINARY, format="jsonl", fields=fields, labels=["0", "1"], metrics=["f1"]
    )
    with pytest.raises(DataError) as caught:
        load_split(task, tmp_path, "train")
    message = str(caught.value)
    assert "train.jsonl, line 1, field 'sourse'" in message
    assert "is_bad, source" in message and "fields:" in message


def test_format_without_a_field_for_the_kind_is_a_config_error(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [_csn_record(1, "u")])
    task = TaskSpec(name="t", kind=TaskKind.BINARY, format="codesearchnet", labels=["0", "1"], metrics=["f1"])
    with pytest.raises(ConfigError, match="role 'label'"):
        load_split(task, tmp_path, "train")


def test_example_user_task_yaml_loads_its_bundled_data():
    task = get_task(str(EXAMPLE_TASK))
    assert task.fields["code"] == "source"
    get_format(task.format)
    for split in available_splits(task, None):
        examples = load_split(task, None, split)
        assert {task.labels[e.label] for e in examples} == set(task.labels)
