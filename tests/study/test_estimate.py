"""`mtpeft study --dry-run`'s cost estimate of a planned run."""

from __future__ import annotations

import pytest

from mtpeft.config import validate_config
from mtpeft.study.estimate import estimate_run, tokens_per_step


def test_lookahead_affinity_adds_its_forward_passes_to_the_estimate():
    tasks = [
        {"task": "vulnerability", "batch_size": 4, "max_length": 64},
        {"task": "clone"},
        {"task": "flaky"},
    ]
    plain = validate_config({"model": "minilm", "tasks": tasks, "max_steps": 10})
    measured = plain.model_copy(
        update={"affinity": validate_config({"tasks": tasks, "affinity": {"every": 5}}).affinity}
    )
    a, b = estimate_run(plain, None), estimate_run(measured, None)
    assert a.tokens == b.tokens == 10 * tokens_per_step(plain)  # trained tokens are the same
    # 2 measurements x (3 + 1) passes over the step's batches, each at 2 of PEFT's 4 FLOPs per token.
    extra = 2 * 4 * tokens_per_step(plain) * 2 / 4
    assert b.flops / a.flops == pytest.approx((a.tokens + extra) / a.tokens)
