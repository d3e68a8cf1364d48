"""Length-grouped batches and dynamic padding: what makes multi-task training cheap."""

from __future__ import annotations

from mtpeft.data.example import Example
from mtpeft.modeling.inputs import TaskFeatures, collate, eval_batches
from mtpeft.tasks.spec import TaskKind, TaskSpec
from mtpeft.training.batching import TaskBatcher


def _features(lengths: list[int]) -> TaskFeatures:
    spec = TaskSpec(name="t", kind=TaskKind.BINARY, format="jsonl", labels=["0", "1"], metrics=["accuracy"])
    seqs = [list(range(1, n + 1)) for n in lengths]
    examples = [Example(id=str(i), code="x", label=i % 2) for i in range(len(lengths))]
    return TaskFeatures(spec, examples, {"code": seqs}, [e.label for e in examples], list(lengths))


def test_dynamic_padding_pads_to_the_longest_in_the_batch_only():
    feats = _features([3, 5, 2])
    batch = collate(feats, [0, 2], pad_id=0)
    assert batch["inputs"]["code"]["input_ids"].shape == (2, 3)
    assert batch["inputs"]["code"]["attention_mask"].sum().item() == 5
    assert batch["num_tokens"] == 5 and batch["num_positions"] == 6
    padded = collate(feats, [0, 2], pad_id=0, pad_to=8)
    assert padded["inputs"]["code"]["input_ids"].shape == (2, 8) and padded["num_positions"] == 16


def test_length_grouping_cuts_padding_compared_with_random_batches():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 250) for _ in range(800)]
    feats = _features(lengths)

    def waste(grouping: bool) -> float:
        batcher = TaskBatcher(lengths, 16, seed=0, length_grouping=grouping)
        real = positions = 0
        for _ in range(len(batcher)):
            batch = collate(feats, batcher.next(), pad_id=0)
            real += batch["num_tokens"]
            positions += batch["num_positions"]
        return 1 - real / positions

    assert waste(True) < 0.1 < waste(False)


def test_batcher_covers_every_example_each_epoch_and_restores_its_position():
    batcher = TaskBatcher([10] * 64, 8, seed=3, length_grouping=True)
    first_epoch = [batcher.next() for _ in range(8)]
    assert sorted(i for b in first_epoch for i in b) == list(range(64))
    saved = dict(batcher.cursor.__dict__)
    upcoming = [batcher.next() for _ in range(5)]
    fresh = TaskBatcher([10] * 64, 8, seed=3, length_grouping=True)
    fresh.restore(saved)
    assert [fresh.next() for _ in range(5)] == upcoming


def test_eval_batches_see_every_example_once():
    feats = _features([4, 9, 1, 7, 3])
    seen = [i for b in eval_batches(feats, 2) for i in b]
    assert sorted(seen) == [0, 1, 2, 3, 4]
