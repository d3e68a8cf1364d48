"""Trained tiny-bert runs to merge, shared by the module's tests: two single-task LoRA runs on one base
(vulnerability: binary, complexity: multiclass), and two one-step runs that must be refused (prefix
tuning; LoRA on another base, tiny-bert built with another seed)."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FORMATS = {"vulnerability": "devign-jsonl", "complexity": "jsonl"}


def _train(root: Path, name: str, **fields: Any) -> list[Path]:
    from mtpeft.config import validate_config
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.training.run import run_training

    data = {task: write_fixture_dataset(fmt, root / "data", n_per_split=16) for task, fmt in FORMATS.items()}
    tasks = fields.pop("tasks", list(FORMATS))
    config = {
        "name": name,
        "mode": "single",
        "model": "tiny-bert",
        "method": "lora",
        "lr": 5e-3,
        "head_lr": 2e-2,
        "pooling": "mean",
        "tasks": [
            {"task": task, "data": str(data[task]), "batch_size": 8, "eval_batch_size": 16, "max_length": 40}
            for task in tasks
        ],
        "max_steps": 8,
        "eval_every": 8,
        "save_every": 8,
        "workspace": str(root / "ws"),
        "baselines": False,
        **fields,
    }
    return [result.run_dir for result in run_training(validate_config(config), progress=False)]


@pytest.fixture(scope="session")
def merge_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("merge")


@pytest.fixture(scope="session")
def sources(merge_root: Path) -> tuple[Path, Path]:
    """(vulnerability run, complexity run): single-task LoRA, same base (tiny-bert, seed 0)."""
    first, second = _train(merge_root, "src")
    return first, second


@pytest.fixture(scope="session")
def prefix_run(merge_root: Path) -> Path:
    (run,) = _train(
        merge_root, "prefix", method="prefix", tasks=["complexity"], max_steps=1, evaluate_splits=[]
    )
    return run


@pytest.fixture(scope="session")
def other_base_run(merge_root: Path) -> Path:
    (run,) = _train(merge_root, "seed1", seed=1, tasks=["complexity"], max_steps=1, evaluate_splits=[])
    return run


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def mtpeft_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `mtpeft ARGS...` in this process through the real entry point (its error handling included)."""
    from mtpeft.cli.main import main

    def invoke(*args: str | Path) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["mtpeft", *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8"))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return CliResult(int(exited.value.code or 0), captured.out, captured.err)

    return invoke
