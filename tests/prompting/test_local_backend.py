"""The local backend on tiny-llama: the contract, padding-invariant batches, truncation, scoring."""

from __future__ import annotations

import math

import pytest

from mtpeft.errors import ModelLoadError
from mtpeft.prompting.backends import ScoringBackend
from mtpeft.prompting.backends.local import LocalBackend, length_batches

PROMPTS = [
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Is x = 1 buggy? Answer yes or no."},
    ],
    [{"role": "user", "content": "def f(a, b):\n    return a / b\n\nDoes it crash? Answer yes or no." * 3}],
    [{"role": "user", "content": "ok?"}],
]


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return LocalBackend("tiny-llama", batch_size=2, context_length=256)


def test_meets_the_scoring_contract(backend):
    assert isinstance(backend, ScoringBackend) and backend.name == "local:tiny-llama"
    assert backend.context_length == 256
    assert backend.count_tokens(PROMPTS[2]) < backend.count_tokens(PROMPTS[1])


def test_generate_answers_every_prompt_in_order_within_the_token_bound(backend):
    answers = backend.generate(PROMPTS, max_new_tokens=3)
    alone = [backend.generate([p], max_new_tokens=3)[0] for p in PROMPTS]
    assert [a.text for a in answers] == [a.text for a in alone]  # left padding changes nothing
    for answer, prompt in zip(answers, PROMPTS, strict=True):
        assert isinstance(answer.text, str) and answer.error is None and not answer.truncated
        assert 1 <= answer.tokens_out <= 3 and answer.tokens_in == backend.count_tokens(prompt)
        assert answer.seconds > 0


@pytest.mark.parametrize("choices", [["yes", "no"], ["O(n log n)", "O(1)", "quadratic time"]])
def test_scores_are_the_same_batched_or_alone(backend, choices):
    batched = backend.score(PROMPTS, choices)
    alone = [backend.score([p], choices)[0] for p in PROMPTS]
    assert len(batched) == 3 and all(len(row) == len(choices) for row in batched)
    for row, single in zip(batched, alone, strict=True):
        assert row == pytest.approx(single, abs=1e-4)
        assert all(math.isfinite(v) and v < 0 for v in row)


def test_a_multi_token_choice_scores_its_tokens_summed(backend):
    [[one, two]] = backend.score([PROMPTS[0]], ["O(n log n)", "O(n log n) O(n log n)"])
    assert two < one  # more tokens, each with log-probability < 0


def test_prompts_longer_than_the_context_are_cut_and_flagged(backend):
    long = [{"role": "user", "content": "word " * 2000 + "Answer yes or no."}]
    [answer] = backend.generate([long], max_new_tokens=2)
    assert answer.truncated and answer.tokens_in == backend.context_length - 2
    assert len(backend.score([long], ["yes"])) == 1


def test_embeddings_are_mean_pooled_hidden_states_independent_of_the_batch(backend):
    texts = ["def f(): pass", "return a very long line of code " * 10, ""]
    vectors = backend.embed(texts)
    assert [len(v) for v in vectors] == [32, 32, 32]  # tiny-llama's hidden size
    assert backend.embed(texts[:1])[0] == pytest.approx(vectors[0], abs=1e-4)


def test_length_batches_group_similar_lengths_within_bounds():
    batches = length_batches([5, 100, 7, 90, 6], batch_size=2, max_tokens=1000)
    assert batches == [[1, 3], [2, 4], [0]]
    assert length_batches([600, 600], batch_size=8, max_tokens=1000) == [[0], [1]]


def test_an_encoder_is_refused_before_anything_loads():
    with pytest.raises(ModelLoadError, match="prompting needs a causal language model"):
        LocalBackend("minilm")


@pytest.mark.real_model
def test_smollm2_answers_through_its_chat_template():
    from mtpeft.prompting.parsing import parse_answer

    smol = LocalBackend("smollm2-135m", batch_size=2)
    prompt = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    assert "<|im_start|>assistant" in smol._render(prompt)
    [[capital, lower]] = smol.score([prompt], ["No", "no"])
    assert capital > lower  # chat models open their reply capitalised: why both spellings are scored
    [answer] = smol.generate([prompt], max_new_tokens=5)
    assert parse_answer(answer.text, ("no", "yes")) is not None and answer.tokens_out <= 5
