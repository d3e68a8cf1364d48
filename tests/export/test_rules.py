"""What cannot be exported is refused by name, from the method and kind registries."""

from __future__ import annotations

import pytest

from mtpeft.errors import ConfigError
from mtpeft.export.rules import refusals, refuse


@pytest.mark.parametrize("method", ["prefix", "prompt", "mtl-lora"])
def test_methods_without_a_one_graph_form_are_refused_by_name(method):
    (problem,) = refusals(method, {"vuln": "binary"}, [])
    assert f"method '{method}' cannot be exported" in problem


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "adapter", "parallel-adapter", "full"])
def test_merged_and_in_graph_methods_with_heads_are_exported(method):
    kinds = {"vuln": "binary", "cx": "multiclass", "clone": "pair", "search": "retrieval"}
    assert refusals(method, kinds, []) == []


def test_generative_and_instruct_tasks_are_refused_by_name_with_what_to_do(tmp_path):
    problems = refusals("lora", {"summarize": "generation", "vuln": "binary", "cx": "multiclass"}, ["cx"])
    assert [p.split(")")[0] for p in problems] == ["task 'summarize' (generation", "task 'cx' (multiclass"]
    assert "generative" in problems[0] and "trained through the LM head" in problems[1]
    with pytest.raises(ConfigError, match="this run cannot be exported: task 'summarize'") as err:
        refuse(tmp_path, problems)
    assert "use the run directory itself (PyTorch)" in str(err.value) and "lora, dora, ia3" in str(err.value)
