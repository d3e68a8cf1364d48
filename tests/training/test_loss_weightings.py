"""The study's loss weightings `normalized`, `gradnorm` and `famo`: each one's defining property, checked
on small problems driven the way the trainer drives them (one backward per task, then `after_step`)."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch import nn

from mtpeft.catalogue import LOSS_WEIGHTING_DESCRIPTIONS
from mtpeft.config import TrainConfig
from mtpeft.errors import ConfigError
from mtpeft.training.grad_conflict import TaskGradients
from mtpeft.training.loss_weighting import LOSS_WEIGHTINGS, StepLosses, build_weighting
from mtpeft.training.loss_weighting.base import BufferAdam

TASKS = ["a", "b"]


def test_the_catalogue_and_the_config_list_exactly_the_registered_weightings():
    assert {name: w.description for name, w in LOSS_WEIGHTINGS.items()} == LOSS_WEIGHTING_DESCRIPTIONS
    assert get_args(TrainConfig.model_fields["loss_weighting"].annotation) == tuple(LOSS_WEIGHTINGS)


def test_unknown_or_bad_options_are_refused_naming_the_field():
    with pytest.raises(
        ConfigError, match=r"loss_weighting_options\.beta.*'beta' is not an option.*gamma, lr"
    ):
        build_weighting("famo", TASKS, {"beta": 1})
    with pytest.raises(ConfigError, match=r"loss_weighting_options\.every.*whole number >= 1, got 0"):
        build_weighting("normalized", TASKS, {"every": 0})
    with pytest.raises(ConfigError, match=r"loss_weighting_options\.alpha.*number >= 0"):
        build_weighting("gradnorm", TASKS, {"alpha": "high"})


def test_buffer_adam_takes_the_same_steps_as_torch_adam():
    """GradNorm's and FAMO's weights step with Adam kept in buffers (checkpointed with the model)."""
    ours, theirs = torch.zeros(3), torch.zeros(3, requires_grad=True)
    adam = BufferAdam(3, lr=0.025, weight_decay=0.01)
    reference = torch.optim.Adam([theirs], lr=0.025, weight_decay=0.01)
    for step in range(20):
        grad = torch.tensor([1.0, -2.0, 0.5]) * math.cos(step)
        adam.step(ours, grad)
        theirs.grad = grad.clone()
        reference.step()
    torch.testing.assert_close(ours, theirs.detach())


# ---- normalized ------------------------------------------------------------------------------------
def _run_normalized(weighting, steps: list[dict[str, float]]) -> None:
    for losses in steps:
        weighting.after_step(StepLosses(before=losses))


def test_normalized_is_uniform_then_proportional_to_each_tasks_mean_loss_of_the_period():
    weighting = build_weighting("normalized", TASKS, {"every": 2})
    weighting.begin(epoch_steps=100)  # `every` wins over the epoch
    _run_normalized(weighting, [{"a": 1.0, "b": 2.0}])
    assert weighting.weights() == {"a": 0.5, "b": 0.5}  # the first period is uniform
    _run_normalized(weighting, [{"a": 1.0, "b": 4.0}])
    # means 1 and 3 -> weights n * L_i / sum L = 0.5 and 1.5 (mean 1); the term divides by the task count
    assert weighting.weights() == pytest.approx({"a": 0.25, "b": 0.75})
    term = weighting.term("b", torch.tensor(2.0), 2)
    assert term.item() == pytest.approx(1.5 * 2.0 / 2)


def test_normalized_gives_a_loss_1000_times_larger_1000_times_the_weight_as_the_study_does():
    """The study's `normalized` weighs harder tasks more (w ~ L); it does not cancel a loss's scale."""
    weighting = build_weighting("normalized", TASKS)
    weighting.begin(epoch_steps=3)  # default period: one epoch
    _run_normalized(weighting, [{"a": 0.7, "b": 700.0}] * 3)
    weights = weighting.weights()
    assert weights["b"] / weights["a"] == pytest.approx(1000.0)
    assert sum(weights.values()) == pytest.approx(1.0)


# ---- gradnorm --------------------------------------------------------------------------------------
def _gradnorm_step(weighting, shared: nn.Linear, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """What the trainer does in one step: one backward per task, each task's gradient read off."""
    gradients = TaskGradients(list(shared.parameters()))
    shared.zero_grad()
    for task, loss in losses.items():
        weighting.term(task, loss, len(losses)).backward(retain_graph=True)
        gradients.record(task)
    norms = gradients.norms()
    weighting.after_step(StepLosses(before={t: v.item() for t, v in losses.items()}, grad_norms=norms))
    return norms


def test_gradnorm_moves_weight_off_a_task_whose_gradients_are_10x_larger_until_norms_match():
    torch.manual_seed(0)
    shared = nn.Linear(8, 4)
    x, y = torch.randn(32, 8), torch.randn(32, 4)
    weighting = build_weighting("gradnorm", TASKS)
    for _ in range(300):  # the losses stay put (no model step): equal training rates, r_i = 1
        out = shared(x)
        norms = _gradnorm_step(
            weighting, shared, {"a": (out - y).pow(2).mean(), "b": 10 * (out - y).pow(2).mean()}
        )
    weights = weighting.weights()
    assert weights["b"] / weights["a"] == pytest.approx(0.1, rel=0.1)  # w ~ 1 / raw gradient norm
    assert norms["a"] / norms["b"] == pytest.approx(1.0, rel=0.1)  # weighted norms now equal
    assert sum(weighting.task_weights.tolist()) == pytest.approx(2.0)  # renormalised to the task count


def test_gradnorm_gives_the_slower_training_task_a_larger_gradient_norm_by_its_rate_to_the_alpha():
    """Targets G * r_i^alpha: a task whose loss fell to 1/2 of its start while the other's stayed has
    relative rates 2/3 and 4/3, so at equilibrium its weighted gradient norm is 2^-alpha of the other's."""
    alpha = 1.0
    weighting = build_weighting("gradnorm", TASKS, {"alpha": alpha})
    raw = {"a": 1.0, "b": 1.0}  # equal raw gradient norms: the weights alone must make the difference
    weighting.after_step(StepLosses(before={"a": 1.0, "b": 1.0}, grad_norms=raw))  # L(0)
    for _ in range(400):
        w = weighting.task_weights
        norms = {t: float(w[i]) * raw[t] for i, t in enumerate(TASKS)}
        weighting.after_step(StepLosses(before={"a": 0.5, "b": 1.0}, grad_norms=norms))
    w = weighting.task_weights
    assert float(w[0] / w[1]) == pytest.approx(0.5**alpha, rel=0.1)


# ---- famo ------------------------------------------------------------------------------------------
def test_famo_gives_more_weight_to_the_task_whose_log_loss_decreased_least():
    weighting = build_weighting("famo", ["a", "b", "c"])
    step = StepLosses(before={"a": 1.0, "b": 1.0, "c": 1.0}, after={"a": 0.5, "b": 0.9, "c": 0.99})
    weighting.after_step(step)  # c decreased least, a most
    first = weighting.weights()
    # Adam's first step moves each logit by lr along its gradient's sign: a down, b and c up alike.
    assert first["a"] < 1 / 3 < first["b"] == pytest.approx(first["c"])
    for _ in range(49):
        weighting.after_step(step)
    z = weighting.weights()
    assert z["c"] > z["b"] > z["a"]
    assert sum(z.values()) == pytest.approx(1.0)


def test_famo_updates_its_logits_exactly_as_the_authors_adam_on_the_softmax_vjp():
    """github.com/Cranial-XIX/FAMO famo.py: delta = log L_before - log L_after; the logits' gradient is
    autograd.grad(softmax(w), w, grad_outputs=delta); Adam(lr, weight_decay=gamma) steps them."""
    weighting = build_weighting("famo", ["a", "b", "c"], {"lr": 0.025, "gamma": 0.001})
    w = torch.zeros(3, requires_grad=True)
    adam = torch.optim.Adam([w], lr=0.025, weight_decay=0.001)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        before, after = torch.rand(3, generator=generator) + 0.5, torch.rand(3, generator=generator) + 0.5
        named = {"before": before, "after": after}
        weighting.after_step(
            StepLosses(**{k: dict(zip("abc", v.tolist(), strict=True)) for k, v in named.items()})
        )
        delta = (before + 1e-8).log() - (after + 1e-8).log()
        w.grad = torch.autograd.grad(torch.softmax(w, -1), w, grad_outputs=delta)[0]
        adam.step()
    torch.testing.assert_close(weighting.logits, w.detach())


def test_famo_per_task_terms_give_the_authors_single_backward_gradient():
    """The trainer backpropagates each task's term on its own and scales by `gradient_scale` after; the
    sum must equal the authors' one backward of sum_i z_i log L_i / c (c detached)."""
    torch.manual_seed(0)
    shared = nn.Linear(6, 3)
    x, targets = torch.randn(16, 6), {"a": torch.randn(16, 3), "b": 3 * torch.randn(16, 3)}
    weighting = build_weighting("famo", TASKS)
    weighting.logits.copy_(torch.tensor([0.3, -0.2]))  # unequal task weights

    def losses() -> dict[str, torch.Tensor]:
        out = shared(x)
        return {t: (out - y).pow(2).mean() for t, y in targets.items()}

    shared.zero_grad()
    values = losses()
    for task, loss in values.items():
        weighting.term(task, loss, 2).backward(retain_graph=True)
    scale = weighting.gradient_scale({t: v.item() for t, v in values.items()})
    ours = [p.grad * scale for p in shared.parameters()]

    shared.zero_grad()
    stacked = torch.stack(list(losses().values()))
    z = torch.softmax(weighting.logits, -1)
    c = (z / (stacked + 1e-8)).sum().detach()
    ((stacked + 1e-8).log() * z / c).sum().backward()
    for mine, reference in zip(ours, (p.grad for p in shared.parameters()), strict=True):
        torch.testing.assert_close(mine, reference)
