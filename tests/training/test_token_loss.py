"""Token loss modes: the defining property of each, on token losses whose weights are easy to read."""

from __future__ import annotations

import torch

from mtpeft.modeling.lm_inputs import IGNORE
from mtpeft.training.token_loss import TOKEN_LOSSES


def _batch(lengths: list[int], value: float) -> dict:
    """A generative micro-batch: one row per example, `lengths` target tokens each of loss `value`."""
    width = max(lengths)
    labels = torch.full((len(lengths), width), IGNORE)
    for row, n in enumerate(lengths):
        labels[row, width - n :] = 1
    mask = labels != IGNORE
    nll = torch.where(mask, torch.tensor(value), torch.tensor(0.0)).requires_grad_()
    samples = torch.arange(len(lengths))[:, None].expand_as(labels).masked_fill(~mask, -1)
    return {"nll": nll, "mask": mask, "lm_samples": samples, "num_target_tokens": int(mask.sum())}


def _step_total(mode: str, tasks: list[str], batches: list[dict]) -> torch.Tensor:
    """What the trainer's step sums under `equal` weighting: each micro-batch's loss / (tasks x its count)."""
    loss = TOKEN_LOSSES[mode]
    loss.prepare(tasks, batches)
    n_tasks = len(set(tasks))
    total = torch.tensor(0.0)
    for task, b in zip(tasks, batches, strict=True):
        total = total + loss.reduce(b["nll"], b["mask"], b["lm_samples"], b) / (n_tasks * tasks.count(task))
    return total


def _token_weights(batches: list[dict]) -> list[float]:
    """The gradient of the step's total on one target token of each batch: that token's weight."""
    return [float(b["nll"].grad[b["mask"]][0]) for b in batches]


def test_sample_counts_a_long_and_a_short_target_the_same():
    batch = _batch([10, 2], value=0.0)
    batch["nll"] = torch.where(batch["mask"], torch.tensor([[1.0] * 10, [4.0] * 10]), torch.tensor(0.0))
    value = TOKEN_LOSSES["sample"].reduce(batch["nll"], batch["mask"], batch["lm_samples"], batch)
    assert float(value) == 2.5  # (mean 1 of the long one + mean 4 of the short one) / 2
    tokens = TOKEN_LOSSES["task-token"].reduce(batch["nll"], batch["mask"], batch["lm_samples"], batch)
    assert float(tokens) == 18 / 12  # every token the same: the long target dominates


def test_sample_tells_packed_examples_apart_within_a_row():
    nll = torch.tensor([[1.0, 1.0, 1.0, 5.0]])
    samples = torch.tensor([[0, 0, 0, 1]])  # one packed row: a 3-token and a 1-token target
    mask = torch.ones_like(nll, dtype=torch.bool)
    assert float(TOKEN_LOSSES["sample"].reduce(nll, mask, samples, {})) == 3.0


def test_task_token_weighs_a_tasks_tokens_by_its_own_count_whatever_the_other_tasks():
    batches = [_batch([8, 8], 1.0), _batch([1, 1], 1.0)]  # summaries vs label words
    _step_total("task-token", ["summarize", "label"], batches).backward()
    long_weight, short_weight = _token_weights(batches)
    assert abs(long_weight * 16 - short_weight * 2) < 1e-7  # each task's tokens add up to its equal share


def test_task_token_pools_a_tasks_micro_batches_of_one_step():
    batches = [_batch([6], 1.0), _batch([2], 1.0)]  # one task drawn twice in a step (proportional)
    total = _step_total("task-token", ["summarize", "summarize"], batches)
    total.backward()
    assert float(total) == 1.0  # the mean over its 8 tokens
    assert _token_weights(batches) == [1 / 8, 1 / 8]  # a token of the short batch is not worth more


def test_batch_token_weighs_every_generative_token_of_the_step_the_same():
    batches = [_batch([8, 8], 1.0), _batch([1, 1], 1.0)]
    total = _step_total("batch-token", ["summarize", "label"], batches)
    total.backward()
    assert _token_weights(batches)[0] == _token_weights(batches)[1]
    assert abs(float(total) - 1.0) < 1e-6  # the two generative tasks keep their equal-weighting share


def test_modes_leave_batches_without_target_tokens_alone():
    heads_batch: dict = {"labels": torch.tensor([0, 1])}
    for name in TOKEN_LOSSES.names():
        TOKEN_LOSSES[name].prepare(["vuln", "summarize"], [heads_batch, _batch([3], 1.0)])
        assert "token_norm" not in heads_batch


def test_the_config_offers_exactly_the_registered_modes_task_token_first():
    from typing import get_args

    from mtpeft.config import TrainConfig

    field = TrainConfig.model_fields["token_loss"]
    assert set(get_args(field.annotation)) == set(TOKEN_LOSSES.names())
    assert field.default == "task-token"
