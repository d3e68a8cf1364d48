"""Task schedules: which task each micro-batch of an optimiser step comes from.

Every optimiser step sees as many micro-batches as there are tasks, so schedules compare at equal
compute. `round-robin` (the study's choice) takes each task once per step; `proportional` draws
tasks with probability ~ n_k (train size); `temperature` with probability ~ n_k ** T
(T = 1 is proportional, T -> 0 is uniform; the study's later revision used T = 0.3).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Schedule = Callable[[int], list[str]]
SCHEDULES: dict[str, Callable[..., Schedule]] = {}


def register_schedule(name: str) -> Callable:
    def wrap(factory: Callable[..., Schedule]) -> Callable[..., Schedule]:
        SCHEDULES[name] = factory
        return factory

    return wrap


@register_schedule("round-robin")
def round_robin(sizes: dict[str, int], *, seed: int, temperature: float) -> Schedule:
    names = list(sizes)
    return lambda step: list(names)


def _sampled(sizes: dict[str, int], seed: int, exponent: float) -> Schedule:
    names = list(sizes)
    weights = np.array([sizes[n] for n in names], dtype=float) ** exponent
    probs = weights / weights.sum()

    def draw(step: int) -> list[str]:
        # Seeded by (seed, step) so a resumed run draws exactly what the uninterrupted one would.
        rng = np.random.default_rng([seed, step])
        return [names[i] for i in rng.choice(len(names), size=len(names), p=probs)]

    return draw


@register_schedule("proportional")
def proportional(sizes: dict[str, int], *, seed: int, temperature: float) -> Schedule:
    return _sampled(sizes, seed, 1.0)


@register_schedule("temperature")
def temperature_sampling(sizes: dict[str, int], *, seed: int, temperature: float) -> Schedule:
    return _sampled(sizes, seed, temperature)


def build_schedule(name: str, sizes: dict[str, int], *, seed: int, temperature: float) -> Schedule:
    return SCHEDULES[name](sizes, seed=seed, temperature=temperature)
