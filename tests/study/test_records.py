"""Which runs a report averages together: one arm is one model x method x settings, seeds apart."""

from __future__ import annotations

import pytest

from mtpeft.store import RunStore
from mtpeft.study.analysis import analyse
from mtpeft.study.records import StudyRuns
from mtpeft.study.synthetic import record_scores

A, B = "py-defect", "py-clone"


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "mtpeft.sqlite")


def test_runs_at_two_sequence_lengths_are_two_arms_not_two_seeds(store):
    for length, (score_a, score_b) in ((128, (0.60, 0.80)), (512, (0.70, 0.90))):
        lengths = {A: {"max_length": length}, B: {"max_length": length}}
        record_scores(store, {A: score_a - 0.02}, task_settings=lengths)
        record_scores(store, {B: score_b - 0.02}, task_settings=lengths)
        record_scores(store, {A: score_a, B: score_b}, task_settings=lengths)
    runs = StudyRuns(store.list_runs())
    assert [str(arm) for arm in runs.arms] == [
        "minilm / lora(max_length=128)",
        "minilm / lora(max_length=512)",
    ]
    # Each arm's shared-minus-single difference is its own, not a mean over the two lengths.
    diffs = {(str(c.arm), c.task): c.diff.mean for c in analyse(store.list_runs()).single_vs_multi}
    assert diffs[("minilm / lora(max_length=512)", A)] == pytest.approx(0.02)
    scores = {str(c.arm): c.left.mean for c in analyse(store.list_runs()).single_vs_multi if c.task == B}
    assert scores == pytest.approx(
        {"minilm / lora(max_length=128)": 0.80, "minilm / lora(max_length=512)": 0.90}
    )


def test_a_different_learning_rate_splits_the_arm_too(store):
    record_scores(store, {A: 0.6}, settings={"lr": 1e-3})
    record_scores(store, {A: 0.7}, settings={"lr": 1e-4})
    assert [str(arm) for arm in StudyRuns(store.list_runs()).arms] == [
        "minilm / lora(lr=0.001)",
        "minilm / lora(lr=0.0001)",
    ]


def test_tasks_with_their_own_batch_sizes_and_seeds_stay_one_arm(store):
    # Different tasks with different batch sizes, and runs that differ only in seed or in how they were
    # watched (validation of the test split, checkpoint interval): one arm, labelled by the method alone.
    batches = {A: {"batch_size": 8}, B: {"batch_size": 16}}
    for seed in (0, 1):
        record_scores(store, {A: 0.6}, seed=seed, task_settings=batches)
        record_scores(store, {B: 0.8}, seed=seed, task_settings=batches, settings={"save_every": 7})
    record_scores(store, {A: 0.6, B: 0.8}, task_settings=batches, settings={"curve_test": True})
    assert [str(arm) for arm in StudyRuns(store.list_runs()).arms] == ["minilm / lora"]


def test_peft_is_compared_with_full_fine_tuning_only_at_the_same_task_settings(store):
    # Full fine-tuning ran at 128 tokens; LoRA at 128 and 512. Only the 128-token LoRA arm is compared:
    # against the 512 one, the difference would credit LoRA with the longer inputs.
    at = {
        128: {A: {"max_length": 128}, B: {"max_length": 128}},
        512: {A: {"max_length": 512}, B: {"max_length": 512}},
    }
    record_scores(store, {A: 0.60, B: 0.80}, method="full", task_settings=at[128], settings={"lr": 5e-5})
    record_scores(store, {A: 0.62, B: 0.81}, task_settings=at[128])
    record_scores(store, {A: 0.75, B: 0.90}, task_settings=at[512])
    compared = {(str(c.arm), c.task): c.diff.mean for c in analyse(store.list_runs()).peft_vs_full}
    assert compared == pytest.approx(
        {("minilm / lora(max_length=128)", A): 0.02, ("minilm / lora(max_length=128)", B): 0.01}
    )
