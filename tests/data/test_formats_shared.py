"""The readers on the real benchmark data: counts and label balance match each folder's SOURCE.md.

The expected numbers are parsed out of SOURCE.md itself, so this fails if the data or SOURCE.md change
and no longer agree.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from mtpeft.data.formats import available_splits, load_split
from mtpeft.tasks import get_task

pytestmark = pytest.mark.shared_data

# "- train: 6000 functions, vulnerable 3000" / "- valid: 85 programs, labels {'1': 13, ...}"
COUNT_LINE = re.compile(
    r"^- (?P<split>\w+): (?P<count>\d+) \w+"
    r"(?:, (?:vulnerable|clones|flaky) (?P<positives>\d+))?"
    r"(?:, labels (?P<labels>\{[^}]*\}))?",
    re.MULTILINE,
)
DATASETS = [
    ("devign-sysevr", "vulnerability"),
    ("reveal-chrome", "vulnerability"),
    ("bigclonebench", "clone"),
    ("tlcodesum", "code-search"),
    ("tlcodesum", "summarization"),
    ("flakeflagger", "flaky"),
    ("corcod", "complexity"),
    ("bugs2fix-small", "repair"),
]


def expected_counts(source_md: Path) -> dict[str, dict]:
    """split -> {count, positives?, labels?} from the '- <split>: N ...' lines of SOURCE.md."""
    found = {}
    for match in COUNT_LINE.finditer(source_md.read_text(encoding="utf-8")):
        found[match["split"]] = {
            "count": int(match["count"]),
            "positives": int(match["positives"]) if match["positives"] else None,
            "labels": ast.literal_eval(match["labels"]) if match["labels"] else None,
        }
    return found


@pytest.mark.parametrize(("dataset", "task_name"), DATASETS, ids=[f"{d}-{t}" for d, t in DATASETS])
def test_reader_matches_source_md(shared_data, dataset, task_name):
    root = shared_data / dataset
    expected = expected_counts(root / "SOURCE.md")
    assert expected, f"no '- <split>: N ...' count lines found in {root / 'SOURCE.md'}"
    task = get_task(task_name)
    assert available_splits(task, root) == list(expected)
    for split, want in expected.items():
        examples = load_split(task, root, split)
        assert len(examples) == want["count"], split
        labels = Counter(example.label for example in examples)
        if want["positives"] is not None:
            assert labels[1] == want["positives"], split
        if want["labels"] is not None:
            assert {task.labels[index]: n for index, n in labels.items()} == want["labels"], split


def test_every_dataset_folder_is_covered(shared_data):
    folders = {path.parent.name for path in shared_data.glob("*/SOURCE.md")}
    assert folders == {dataset for dataset, _ in DATASETS}


def test_retrieval_and_generation_read_docstrings_from_the_same_records(shared_data):
    root = shared_data / "tlcodesum"
    search = load_split(get_task("code-search"), root, "valid")
    summaries = load_split(get_task("summarization"), root, "valid")
    assert [(e.id, e.code, e.query) for e in search] == [(e.id, e.code, e.target) for e in summaries]
    assert all(e.meta["url"].startswith("tlcodesum/") for e in search)


def test_bigclonebench_pairs_resolve_to_the_functions_of_data_jsonl(shared_data):
    root = shared_data / "bigclonebench"
    first_pair = (root / "test.txt").read_text().split("\n", 1)[0].split("\t")
    functions = {}
    for line in (root / "data.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["idx"] in first_pair[:2]:
            functions[record["idx"]] = record["func"]
    example = load_split(get_task("clone"), root, "test")[0]
    assert (example.id, example.id_b, example.label) == (first_pair[0], first_pair[1], int(first_pair[2]))
    assert (example.code, example.code_b) == (functions[first_pair[0]], functions[first_pair[1]])
