"""Messages quote user text cut to one line (issue 24, item 16): a duplicate 5 MB id once gave a 5 MB
message, a label-set error printed 90,000 labels. Every message below comes from a hostile file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mtpeft.config import load_config
from mtpeft.data.formats import load_split
from mtpeft.errors import MtpeftError, shorten, shorten_list
from mtpeft.study.spec import load_study
from mtpeft.tasks import get_task, load_task_yaml

HUGE = "x" * 5_000_000
MANY = [f"label{i}" for i in range(90_000)]
LIMIT = 500  # characters of message beyond the file's path: "a few hundred"


def test_shorten_cuts_text_to_one_escaped_line():
    assert shorten("abc") == "'abc'"
    assert len(shorten(HUGE)) == 80 and shorten(HUGE).endswith("...'")
    assert shorten("a\x1b[2J\nb", quoted=False) == "a\\x1b[2J\\nb"  # no terminal control, one line
    assert shorten(10**5000) == "<an integer of about 5001 digits>"  # repr() would raise ValueError


def test_shorten_list_counts_what_it_leaves_out():
    assert shorten_list(["a", "b"]) == "'a', 'b'"
    shown = shorten_list(MANY)
    assert shown.endswith("... and 89992 more") and len(shown) < 150
    assert len(shorten_list([HUGE, HUGE])) < 100


def _task(tmp_path: Path, labels: list[str], kind: str = "multiclass") -> Path:
    path = tmp_path / "task.yaml"
    spec = {"name": "t", "kind": kind, "format": "jsonl", "labels": labels, "metrics": ["accuracy"]}
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def _jsonl(folder: Path, name: str, records: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _duplicate_huge_id(tmp_path: Path) -> None:
    root = _jsonl(tmp_path / "d", "train.jsonl", [{"code": "a", "label": "0", "idx": HUGE}] * 2)
    load_split(get_task(_task(tmp_path, ["0", "1"], "binary")), root, "train")


def _label_outside_90000(tmp_path: Path) -> None:
    root = _jsonl(tmp_path / "d", "train.jsonl", [{"code": "a", "label": "nope"}])
    load_split(get_task(_task(tmp_path, MANY)), root, "train")


def _huge_label_value(tmp_path: Path) -> None:
    root = _jsonl(tmp_path / "d", "train.jsonl", [{"code": "a", "label": HUGE}])
    load_split(get_task(_task(tmp_path, ["0", "1"], "binary")), root, "train")


def _binary_with_90000_labels(tmp_path: Path) -> None:
    load_task_yaml(_task(tmp_path, MANY, "binary"))


def _label_twice_among_90000(tmp_path: Path) -> None:
    load_task_yaml(_task(tmp_path, [*MANY, MANY[0]]))


def _huge_key_twice_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    key = HUGE[:1_000_000]  # an explicit key (`? key`): a plain one stops at 1024 characters
    path.write_text(f"name: t\n? {key}\n: 1\n? {key}\n: 2\n")
    load_config(path)


def _huge_unknown_field(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(f"name: t\ntasks: [{{task: vulnerability}}]\n? {HUGE[:1_000_000]}\n: 1\n")
    load_config(path)


def _huge_task_name(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(f"name: t\ntasks: [{{task: {HUGE[:1_000_000]}}}]\n")
    get_task(load_config(path).tasks[0].task)


def _many_duplicate_task_names(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    entries = ", ".join(
        f"{{task: vulnerability, name: n{i}}}, {{task: flaky, name: n{i}}}" for i in range(5_000)
    )
    path.write_text(f"name: t\ntasks: [{entries}]\n")
    load_config(path)


def _missing_split_among_3000(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(3_000):
        _jsonl(root, f"part{i}.jsonl", [{"code": "a", "label": "0"}])
    load_split(get_task(_task(tmp_path, ["0", "1"], "binary")), root, "test")


def _study_group_of_unknown_tasks(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    group = json.dumps([f"t{i}" for i in range(20_000)])
    path.write_text(
        f"name: s\ntasks: [{{task: vulnerability}}]\ngrid: {{methods: [lora], task_sets: [[{group}]]}}\n"
    )
    load_study(path)


HOSTILE: dict[str, Callable[[Path], None]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _duplicate_huge_id,
        _label_outside_90000,
        _huge_label_value,
        _binary_with_90000_labels,
        _label_twice_among_90000,
        _huge_key_twice_in_yaml,
        _huge_unknown_field,
        _huge_task_name,
        _many_duplicate_task_names,
        _missing_split_among_3000,
        _study_group_of_unknown_tasks,
    )
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_no_message_from_a_hostile_file_exceeds_a_few_hundred_characters(tmp_path, case):
    with pytest.raises(MtpeftError) as caught:
        HOSTILE[case](tmp_path)
    message = str(caught.value).replace(str(tmp_path), "<tmp>")
    assert len(message) < LIMIT, message[:2000]
    assert "\n" not in message
