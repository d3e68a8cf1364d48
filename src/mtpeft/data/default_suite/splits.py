"""Deterministic randomness: stable hashes (never Python's salted `hash`) drive splits and sampling."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

SPLITS = ("train", "valid", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)


def stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts' text; the same on every machine and run."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: object) -> random.Random:
    """A private random stream per item, so one item's choices never depend on another's."""
    return random.Random(stable_int(*parts))


def assign_splits(sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Group (module or HumanEval task id) -> split, for train 80% / valid 10% / test 10% of the items.

    Groups are taken in the order of a stable hash of seed + group name and each goes to the split
    furthest below its share so far; a plain hash threshold would leave valid/test short whenever a
    large module lands there.
    """
    counts = dict.fromkeys(SPLITS, 0)
    assigned: dict[str, str] = {}
    for group in sorted(sizes, key=lambda g: (stable_int("split", seed, g), g)):
        total = sum(counts.values()) + sizes[group]
        split = max(SPLITS, key=lambda s: share_of(s) * total - counts[s])
        assigned[group] = split
        counts[split] += sizes[group]
    return assigned


def share_of(split: str) -> float:
    return SPLIT_SHARES[SPLITS.index(split)]


def by_split(items: Iterable[T], group_of: Callable[[T], str], seed: int) -> dict[str, list[T]]:
    """Items per split, whole groups at a time, in input order within a split."""
    items = list(items)
    sizes: dict[str, int] = {}
    for item in items:
        sizes[group_of(item)] = sizes.get(group_of(item), 0) + 1
    split = assign_splits(sizes, seed)
    out: dict[str, list[T]] = {name: [] for name in SPLITS}
    for item in items:
        out[split[group_of(item)]].append(item)
    return out


def seeded_order(items: Sequence[T], key_of: Callable[[T], str], *salt: object) -> list[T]:
    """A seed-dependent shuffle that does not depend on the input order (ties broken by key)."""
    return sorted(items, key=lambda item: (stable_int(*salt, key_of(item)), key_of(item)))
