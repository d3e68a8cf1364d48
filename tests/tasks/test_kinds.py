"""Task kinds: each one's head reads the inputs its batches carry; an unknown kind is a clear error."""

from __future__ import annotations

import pytest

from mtpeft.config import TaskEntry
from mtpeft.data.example import Example
from mtpeft.errors import ConfigError
from mtpeft.tasks import TaskSpec, load_task_yaml
from mtpeft.tasks.kinds import KINDS, kind_of


def _spec(kind: str) -> TaskSpec:
    labels = ["0", "1"] if KINDS[kind].labelled else None
    return TaskSpec(name="t", kind=kind, format="jsonl", labels=labels, metrics=["accuracy"])


@pytest.mark.parametrize("kind", [name for name, kind in KINDS.items() if "heads" in kind.formulations])
def test_head_reads_exactly_the_inputs_its_kind_tokenises(kind):
    head = kind_of(_spec(kind)).build_head(_spec(kind), 8, {"dim": 8})
    assert head.inputs == KINDS[kind].inputs


def test_every_kind_trains_and_generation_only_through_the_language_model():
    assert all(kind.trainable for _, kind in KINDS.items())
    generation = kind_of(_spec("generation"))
    assert generation.formulation(_spec("generation"), None) == "instruct"
    with pytest.raises(ConfigError, match="trains in formulation instruct, not 'heads'"):
        generation.formulation(_spec("generation"), "heads")
    with pytest.raises(ConfigError, match="has no head"):
        generation.build_head(_spec("generation"), 8, {})


def test_token_estimate_counts_every_encoded_input_at_its_own_maximum():
    entry = TaskEntry(task="t", max_length=100, max_query_length=20, max_target_length=30)
    # A generation example also holds its instruction (bounded by 64) and its target.
    assert {name: kind.max_tokens(entry) for name, kind in KINDS.items()} == {
        "binary": 100,
        "multiclass": 100,
        "pair": 200,
        "retrieval": 120,
        "generation": 100 + 64 + 30,
    }
    instruct = entry.model_copy(update={"formulation": "instruct"})
    assert KINDS["pair"].max_tokens(instruct) == 200 + 64 + 8  # and a label word, not a whole target


def test_task_yaml_with_an_unknown_kind_names_the_kinds(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("name: t\nkind: regression\nformat: jsonl\nmetrics: [accuracy]\n")
    with pytest.raises(ConfigError, match="field 'kind'.*unknown task kind 'regression'; kinds are binary"):
        load_task_yaml(path)


def test_binary_task_needs_two_labels():
    with pytest.raises(ValueError, match="binary task 't' needs exactly 2 labels"):
        TaskSpec(name="t", kind="binary", format="jsonl", labels=["a", "b", "c"], metrics=["accuracy"])


def test_generation_scores_hypotheses_against_the_targets():
    spec = TaskSpec(name="t", kind="generation", format="jsonl", metrics=["exact_match"])
    examples = [Example(id="1", code="x", target="a b"), Example(id="2", code="y", target="c")]
    result = kind_of(spec).score(spec, {"hypotheses": ["a b", "d"]}, examples)
    assert result.metrics == {"exact_match": 0.5}
    rows = list(kind_of(spec).prediction_rows(spec, examples, result.outputs))
    assert rows[1] == {"id": "2", "reference": "c", "hypothesis": "d"}
