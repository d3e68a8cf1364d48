"""Task schedules and loss weightings behave as their one-line docs say."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mtpeft.training.loss_weighting import LOSS_WEIGHTINGS
from mtpeft.training.sampling import build_schedule

SIZES = {"big": 9000, "small": 1000}


def test_round_robin_takes_every_task_once_per_step():
    schedule = build_schedule("round-robin", SIZES, seed=0, temperature=0.3)
    assert all(sorted(schedule(step)) == ["big", "small"] for step in range(10))


def _share_of_small(name: str, temperature: float = 0.3) -> float:
    schedule = build_schedule(name, SIZES, seed=1, temperature=temperature)
    counts = Counter(t for step in range(2000) for t in schedule(step))
    return counts["small"] / sum(counts.values())


def test_proportional_follows_dataset_sizes_and_temperature_flattens_them():
    assert _share_of_small("proportional") == pytest.approx(0.1, abs=0.02)
    # p ~ n^0.3: 1000^0.3 / (1000^0.3 + 9000^0.3) = 0.34
    assert _share_of_small("temperature") == pytest.approx(0.34, abs=0.03)


def test_sampled_schedules_are_reproducible_per_step_for_resume():
    a = build_schedule("temperature", SIZES, seed=5, temperature=0.3)
    b = build_schedule("temperature", SIZES, seed=5, temperature=0.3)
    assert [a(s) for s in range(50, 60)] == [b(s) for s in range(50, 60)]


def test_equal_weighting_is_the_mean():
    w = LOSS_WEIGHTINGS["equal"](["a", "b"])
    total = w({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    assert total.item() == pytest.approx(3.0)


def test_learned_weighting_is_a_softmax_that_gets_gradients():
    w = LOSS_WEIGHTINGS["learned"](["a", "b"])
    total = w({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    assert total.item() == pytest.approx(3.0)  # uniform softmax at start
    total.backward()
    assert w.logits.grad is not None and w.logits.grad[1] > 0 > w.logits.grad[0]
    assert sum(w.weights().values()) == pytest.approx(1.0)


def test_uncertainty_weighting_matches_kendall_formula():
    w = LOSS_WEIGHTINGS["uncertainty"](["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.5, -0.5]))
    total = w({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    expected = torch.exp(torch.tensor(-0.5)) * 2 + 0.5 + torch.exp(torch.tensor(0.5)) * 4 - 0.5
    assert total.item() == pytest.approx(expected.item())
