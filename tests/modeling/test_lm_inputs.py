"""Inputs of tasks trained through the LM head: prompts, targets, scored tokens and packing."""

from __future__ import annotations

import pytest
import torch

from mtpeft.config import TaskEntry
from mtpeft.data.example import Example
from mtpeft.modeling import lm
from mtpeft.modeling.inputs import collate, tokenize_task
from mtpeft.modeling.lm_inputs import IGNORE
from mtpeft.models import load_backbone
from mtpeft.peft_methods import apply_method
from mtpeft.tasks import get_task
from tiny_t5 import tiny_t5_folder

LONG_CODE = "int f(int x) { " + " ".join(f"x = x + {i};" for i in range(200)) + " return x; }"
EXAMPLES = [
    Example(id="1", code="int a() { return 1; }", target="returns one ."),
    Example(id="2", code="void b(int *p) { free(p); free(p); }", target="frees p twice , a bug ."),
    Example(id="3", code="x", target="x"),
]


@pytest.fixture(scope="module")
def llama():
    backbone = load_backbone("tiny-llama", lm_head=True, seed=1)
    return backbone, apply_method(backbone, "lora").eval()


def _features(backbone, task="summarization", examples=EXAMPLES, **entry):
    entry = TaskEntry(task=task, max_length=entry.pop("max_length", 32), **entry)
    return tokenize_task(get_task(task), entry, examples, backbone.tokenizer, lm_head=backbone.info.lm_head)


def _text(backbone, ids) -> str:
    return backbone.tokenizer.decode(ids)


def test_only_the_code_is_cut_and_the_prompt_asks_the_task_then_the_target_ends(llama):
    backbone, _ = llama
    long = [Example(id="1", code=LONG_CODE, target="adds numbers .")]
    seqs = _features(backbone, examples=long, max_length=16, max_target_length=4).lm
    prompt = _text(backbone, seqs.prompts[0])
    assert "summarize this method in one sentence" in prompt  # the instruction survives the cut
    assert "x = x + 0" in prompt and "x = x + 30" not in prompt  # the code is cut to 16 tokens
    assert prompt.rstrip().endswith("assistant :")  # the plain chat template's reply prompt
    assert seqs.targets[0][-1] == backbone.tokenizer.sep_token_id == seqs.end_id  # BERT vocab: [SEP] ends
    assert len(seqs.targets[0]) == 4  # max_target_length, end token included


def test_a_training_batch_scores_the_target_tokens_only(llama):
    backbone, _ = llama
    features = _features(backbone)
    batch = collate(features, [0, 1, 2], backbone.tokenizer.pad_token_id)
    labels, ids = batch["lm_labels"], batch["inputs"]["lm"]["input_ids"]
    for row, i in enumerate([0, 1, 2]):
        target = features.lm.targets[i]
        assert labels[row][labels[row] != IGNORE].tolist() == target
        assert ids[row, -len(target) :].tolist() == target  # left padded: every target ends the row
    assert batch["num_target_tokens"] == sum(len(t) for t in features.lm.targets)


def test_an_instruct_classification_batch_scores_every_answer_word_per_example(llama):
    backbone, _ = llama
    examples = [Example(id="1", code="int f();", label=1), Example(id="2", code="int g();", label=0)]
    entry = {"formulation": "instruct"}
    features = _features(backbone, task="vulnerability", examples=examples, **entry)
    assert [_text(backbone, t) for t in features.lm.targets] == ["yes [SEP]", "no [SEP]"]
    batch = collate(features, [0, 1], backbone.tokenizer.pad_token_id, predict=True)
    assert batch["num_choices"] == 2 and batch["inputs"]["lm"]["input_ids"].shape[0] == 4
    assert "does this function contain a security vulnerability" in _text(backbone, features.lm.prompts[0])


def _packed_and_alone(llama):
    backbone, adapted = llama
    # A long example sets the row width; the three short ones then fit in one row together.
    long = Example(id="0", code=LONG_CODE, target="adds numbers .")
    features = _features(backbone, examples=[*EXAMPLES, long], packing=True, max_length=200)
    packed = collate(features, [0, 1, 2], backbone.tokenizer.pad_token_id)
    unpacked = _features(backbone, examples=[*EXAMPLES, long], max_length=200)
    with torch.no_grad():
        nll, _ = lm.token_nll(adapted, packed)
        alone = [lm.token_nll(adapted, collate(unpacked, [i], 0))[0][0] for i in range(3)]
    by_example = [nll[packed["lm_samples"] == i] for i in range(3)]
    return packed, by_example, alone


def test_packed_examples_do_not_attend_to_each_other(llama):
    packed, by_example, alone = _packed_and_alone(llama)
    assert packed["inputs"]["lm"]["input_ids"].shape[0] == 1, "the three short examples share one row"
    # Each example's token losses are those it has alone in a row: no token saw another example.
    for i in range(3):
        torch.testing.assert_close(by_example[i], alone[i], atol=1e-5, rtol=1e-5)


def test_an_encoder_decoder_reads_the_prompt_and_decodes_the_target(tmp_path):
    backbone = load_backbone(tiny_t5_folder(tmp_path))
    features = _features(backbone)
    batch = collate(features, [0, 1], backbone.tokenizer.pad_token_id)
    assert features.lm.prompts[0][-1] == features.lm.end_id  # T5 inputs close with the end token
    assert "lm_keep" not in batch  # the decoder's own positions are the targets, all of them scored
    labels = batch["lm_labels"]
    assert labels[0][labels[0] != IGNORE].tolist() == features.lm.targets[0]
    adapted = apply_method(backbone, "lora").eval()
    with torch.no_grad():
        assert torch.isfinite(lm.loss(adapted, batch, None))
