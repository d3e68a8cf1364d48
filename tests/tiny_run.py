"""The tiny trained run of the inference tests (tests/api/conftest.py's session fixture), importable by
every test package: tiny-bert, one shared LoRA, four task kinds with their own token limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
