"""One tiny trained run for every inference test: tiny-bert, one shared LoRA, four task kinds.

binary (vulnerability), multiclass (complexity), pair (clone) and retrieval (code-search), each with its
own token limits, so per-task truncation is exercised (complexity and code search read 40 tokens of code,
vulnerability 64, clone 48). Mean pooling and a larger head learning rate make 24 steps enough for every
task to split its test set (a label check against all-one-class predictions would prove little), and
code search to rank well (test MRR about 0.9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

FORMATS = {
    "vulnerability": "devign-jsonl",
    "complexity": "jsonl",
    "clone": "bigclonebench",
    "code-search": "codesearchnet",
}
LIMITS = {
    "vulnerability": {"max_length": 64},
    "complexity": {"max_length": 40},
    "clone": {"max_length": 48},
    "code-search": {"max_length": 40, "max_query_length": 12},
}


def train_tiny_run(
    root: Path, *, seed: int = 0, name: str = "api", overrides: dict[str, Any] | None = None
) -> Path:
    """Train the tiny run under `root`; `overrides` replace config fields. `seed` also sets tiny-bert's random
    base weights, so two runs on the same base (tests/modeling/test_shared_base.py) differ by overrides."""
    from mtpeft.config import validate_config
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.training.run import run_training

    data = {task: write_fixture_dataset(fmt, root / "data", n_per_split=24) for task, fmt in FORMATS.items()}
    config = {
        "name": name,
        "model": "tiny-bert",
        "method": "lora",
        "lr": 5e-3,
        "head_lr": 2e-2,
        "pooling": "mean",
        "tasks": [
            {"task": task, "data": str(path), "batch_size": 8, "eval_batch_size": 7, **LIMITS[task]}
            for task, path in data.items()
        ],
        "max_steps": 24,
        "eval_every": 8,
        "save_every": 24,
        "workspace": str(root / "ws"),
        "seed": seed,
        "baselines": False,
        **(overrides or {}),
    }
    return run_training(validate_config(config), progress=False)[0].run_dir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def run(run_dir: Path):
    import mtpeft

    return mtpeft.load(run_dir, device="cpu", batch_size=5)
