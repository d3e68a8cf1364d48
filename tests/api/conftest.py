"""One tiny trained run for every inference test: tiny-bert, one shared LoRA, four task kinds.

binary (vulnerability), multiclass (complexity), pair (clone) and retrieval (code-search), each with its
own token limits, so per-task truncation is exercised (complexity and code search read 40 tokens of code,
vulnerability 64, clone 48). Mean pooling and a larger head learning rate make 24 steps enough for every
task to split its test set (a label check against all-one-class predictions would prove little), and
code search to rank well (test MRR about 0.9).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_run import train_tiny_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def run(run_dir: Path):
    import mtpeft

    return mtpeft.load(run_dir, device="cpu", batch_size=5)
