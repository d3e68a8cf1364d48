"""The built-in task YAMLs declare what the study needs, and each names a format that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtpeft.data.formats import FORMATS
from mtpeft.errors import ConfigError
from mtpeft.tasks import TaskKind, builtin_tasks, get_task, load_task_yaml

BINARY = ["0", "1"]
# name: (kind, format, labels, metrics, trainable)
EXPECTED = {
    "vulnerability": ("binary", "devign-jsonl", BINARY, ["accuracy", "f1", "mcc"], True),
    "vulnerability-devign-json": ("binary", "devign-json", BINARY, ["accuracy", "f1", "mcc"], True),
    "clone": ("pair", "bigclonebench", BINARY, ["f1", "precision", "recall"], True),
    "code-search": ("retrieval", "codesearchnet", None, ["mrr", "recall@1", "recall@5", "recall@10"], True),
    "flaky": ("binary", "flakeflagger-json", BINARY, ["f1", "accuracy", "mcc"], True),
    "complexity": (
        "multiclass",
        "jsonl",
        ["1", "logn", "n", "nlogn", "n_square"],
        ["accuracy", "macro_f1"],
        True,
    ),
    "summarization": (
        "generation",
        "codesearchnet",
        None,
        ["smoothed_bleu", "rouge_l", "bleu", "exact_match"],
        True,
    ),
    "repair": ("generation", "code-refinement", None, ["exact_match", "codexglue_bleu", "bleu"], True),
    "py-search": ("retrieval", "codesearchnet", None, ["mrr", "recall@1", "recall@5", "recall@10"], True),
    "py-defect": ("binary", "devign-jsonl", BINARY, ["accuracy", "f1", "mcc"], True),
    "py-clone": ("pair", "bigclonebench", BINARY, ["f1", "precision", "recall"], True),
    "py-summarize": (
        "generation",
        "codesearchnet",
        None,
        ["smoothed_bleu", "rouge_l", "bleu", "exact_match"],
        True,
    ),
}
EXAMPLE_TASK = Path(__file__).resolve().parents[2] / "examples" / "tasks" / "my-task.yaml"


def test_builtin_task_set_is_the_declared_one():
    assert set(builtin_tasks()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_task_declares_kind_format_labels_and_metrics(name):
    kind, format_name, labels, metrics, trainable = EXPECTED[name]
    task = get_task(name)
    assert (task.kind, task.format, task.labels, task.metrics) == (kind, format_name, labels, metrics)
    assert task.primary == metrics[0]
    assert task.trainable is trainable
    assert task.format in FORMATS
    assert task.description, "shown by `mtpeft data tasks` and in reports"


def test_builtin_file_names_match_task_names():
    from mtpeft.tasks.registry import BUILTIN_DIR

    assert {path.stem for path in BUILTIN_DIR.glob("*.yaml")} == set(EXPECTED)


def test_flaky_f1_is_documented_as_the_positive_class():
    task = get_task("flaky")
    assert task.labels[1] == "1" and "positive (flaky) class" in task.description


def test_example_user_task_declares_every_field():
    task = load_task_yaml(EXAMPLE_TASK)
    assert task.kind == TaskKind.BINARY and task.format in FORMATS
    assert task.data and Path(task.data).is_dir()  # resolved next to the YAML
    text = EXAMPLE_TASK.read_text()
    for field_name in ("name", "kind", "format", "data", "fields", "labels", "metrics", "primary_metric",
                       "description", "trainable"):  # fmt: skip
        assert f"\n{field_name}:" in text
    assert text.count("#") >= 10, "each field carries a comment"


def test_unknown_task_name_lists_the_builtin_ones():
    with pytest.raises(ConfigError, match="unknown task 'vulnerabilty'.*vulnerability"):
        get_task("vulnerabilty")
