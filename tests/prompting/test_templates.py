"""Templates per task kind, overrides from the task YAML, and truncation that cuts only code."""

from __future__ import annotations

import pytest

from mtpeft.data.example import Example
from mtpeft.errors import ConfigError
from mtpeft.prompting.templates import Code, Turn, render, template_for
from mtpeft.prompting.truncation import fit, water_level
from mtpeft.tasks import get_task, load_task_yaml

ITEM = Example(id="1", code="def f(x):\n    return x", code_b="def g(y):\n    return y", query="identity")


def test_binary_asks_a_yes_no_question_naming_the_task():
    template = template_for(get_task("py-defect"))
    prompt, cut = render(template.conversation(ITEM, []))
    assert [m["role"] for m in prompt] == ["system", "user"] and not cut
    assert "defective" in prompt[0]["content"]
    assert prompt[1]["content"].endswith("Does this function contain a bug? Answer yes or no.")
    assert "```\ndef f(x):\n    return x\n```" in prompt[1]["content"]
    assert template.words == ("no", "yes")  # label "1" (index 1) is yes


def test_pair_shows_both_snippets_and_retrieval_the_query():
    pair, _ = render(template_for(get_task("py-clone")).conversation(ITEM, []))
    assert "Code A:" in pair[1]["content"] and "def g(y)" in pair[1]["content"]
    search, _ = render(template_for(get_task("py-search")).conversation(ITEM, []))
    assert search[1]["content"].startswith("Query: identity")
    assert search[1]["content"].endswith("Answer yes or no.")


def test_multiclass_lists_its_label_words():
    template = template_for(get_task("complexity"))
    prompt, _ = render(template.conversation(ITEM, []))
    assert prompt[1]["content"].endswith(
        "Answer with exactly one of: O(1), O(log n), O(n), O(n log n), O(n^2)."
    )


def test_shots_are_prior_user_and_assistant_turns():
    template = template_for(get_task("py-defect"))
    shots = [Example(id="a", code="x = 1", label=0), Example(id="b", code="danger()", label=1)]
    prompt, _ = render(template.conversation(ITEM, shots))
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [prompt[2]["content"], prompt[4]["content"]] == ["no", "yes"]
    assert "x = 1" in prompt[1]["content"] and "def f(x)" in prompt[-1]["content"]


def test_a_task_without_prompt_block_uses_its_description(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nkind: binary\nformat: jsonl\nlabels: [ok, bad]\nmetrics: [accuracy]\n"
                    "description: Is this function slow?\n")  # fmt: skip
    template = template_for(load_task_yaml(path))
    assert "Is this function slow?" in template.system and template.words == ("no", "yes")


def test_prompt_block_overrides_question_and_words(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nkind: binary\nformat: jsonl\nlabels: [ok, bad]\nmetrics: [accuracy]\n"
        "prompt: {system: Be terse., question: Is it slow?, labels: {ok: fast, bad: slow}}\n"
    )
    template = template_for(load_task_yaml(path))
    assert (template.system, template.question, template.words) == (
        "Be terse.",
        "Is it slow?",
        ("fast", "slow"),
    )
    assert template.instruction == "Answer with exactly one of: fast, slow."


@pytest.mark.parametrize(
    ("labels", "message"),
    [("{ok: fast}", "one answer word for each label"), ("{ok: same, bad: SAME}", "must differ")],
)
def test_bad_prompt_labels_name_the_field(tmp_path, labels, message):
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nkind: binary\nformat: jsonl\nlabels: [ok, bad]\nmetrics: [accuracy]\n"
        f"prompt: {{labels: {labels}}}\n"
    )
    with pytest.raises(ConfigError, match=message) as err:
        load_task_yaml(path)
    assert str(path) in str(err.value) and "prompt" in str(err.value)


def test_a_generation_task_is_asked_the_prompt_its_fine_tuned_runs_learn_from():
    from mtpeft.data.example import Example
    from mtpeft.tasks.kinds import kind_of

    spec = get_task("py-summarize")
    example = Example("1", "def add(a, b):\n    return a + b", target="Add two numbers.")
    template = template_for(spec)
    assert template.generates and template.conversation(example, []) == kind_of(spec).prompt(spec, example)
    shot = template.conversation(example, [example])[2]
    assert (shot.role, shot.parts) == ("assistant", ("Add two numbers.",))


def _words(prompt) -> int:
    return sum(len(m["content"].split()) for m in prompt)


def test_fit_cuts_only_code_and_keeps_the_question():
    long_code = "\n".join(f"x{i} = compute(y{i})" for i in range(400))
    conversation = [
        Turn("system", ("Role.",)),
        Turn("user", ("Code:\n", Code(long_code), "\n\nIs it buggy? Answer yes or no.")),
    ]
    prompt, truncated, tokens = fit(conversation, _words, budget=150)
    assert truncated and tokens <= 150 and tokens == _words(prompt)
    assert prompt[0]["content"] == "Role." and prompt[1]["content"].endswith("Is it buggy? Answer yes or no.")
    assert "... (truncated)" in prompt[1]["content"] and prompt[1]["content"].startswith("Code:\n```\nx0 = ")


def test_fit_leaves_prompts_that_fit_alone():
    conversation = [Turn("user", (Code("a = 1"), " Is it?"))]
    prompt, truncated, _ = fit(conversation, _words, budget=100)
    assert not truncated and prompt == render(conversation)[0]


def test_water_level_shares_the_budget_evenly():
    assert water_level([10, 100, 1000], 1110) == 1000
    assert water_level([10, 100, 1000], 210) == 100
    assert water_level([10, 100, 1000], 130) == 60
    assert water_level([10, 100], 0) == 0
