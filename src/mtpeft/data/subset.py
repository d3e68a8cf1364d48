"""The seeded test (or train) subset every method is scored on: fine-tuned runs, evaluations, prompting.

Torch-free, so `mtpeft prompt` against a server subsamples without importing torch.
"""

from __future__ import annotations

import random

from mtpeft.data.example import Example


def subsample(examples: list[Example], limit: int | None, *, seed: int) -> list[Example]:
    """A seeded random subset (kept in file order, so outputs line up with the files)."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
