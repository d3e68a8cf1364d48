"""Trained tiny-bert runs to merge, shared by the module's tests: a small study (two single-task LoRA
runs on one base, vulnerability: binary, complexity: multiclass; their multi-task run; their merged arm),
and two one-step runs that must be refused (prefix tuning; LoRA on another base, tiny-bert with another
seed)."""

from __future__ import annotations

from collections.abc import Callable
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


STUDY = "merging"


@pytest.fixture(scope="session")
def merging_study(merge_root: Path):
    """A study with a merged arm: tiny-bert LoRA, both tasks alone and together, and the two single-task
    runs merged with linear weights (1, 0), so the merged arm should answer vulnerability as its run."""
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.study.spec import parse_study

    data = {
        task: write_fixture_dataset(fmt, merge_root / "data", n_per_split=16) for task, fmt in FORMATS.items()
    }
    entry = {"batch_size": 8, "eval_batch_size": 16, "max_length": 40}
    return parse_study(
        {
            "name": STUDY,
            "workspace": str(merge_root / "ws"),
            "base": {
                "lr": 5e-3,
                "head_lr": 2e-2,
                "pooling": "mean",
                "max_steps": 8,
                "eval_every": 8,
                "save_every": 8,
                "baselines": False,
            },
            "tasks": [{"task": task, "data": str(path), **entry} for task, path in data.items()],
            "grid": {
                "models": ["tiny-bert"],
                "methods": ["lora"],
                "task_sets": ["single", "all"],
                "merges": [{"method": "linear", "weights": [1, 0]}],
            },
        }
    )


@pytest.fixture(scope="session")
def study_outcomes(merging_study) -> list:
    """What running the study did, run by run and merge by merge."""
    from mtpeft.study.runner import run_study

    return run_study(merging_study, progress=False)


@pytest.fixture(scope="session")
def study_run(merge_root: Path, study_outcomes: list) -> Callable[[str, list[str]], Path]:
    """The run directory of the study's finished run of a mode ("single", "multi", "merged") over tasks."""
    from mtpeft.store import RunStore

    def find(mode: str, tasks: list[str]) -> Path:
        store = RunStore(merge_root / "ws" / "mtpeft.sqlite")
        finished = store.list_runs(study=STUDY, status="finished")
        (record,) = [r for r in finished if r.mode == mode and r.tasks == tasks]
        return Path(record.run_dir).resolve()

    return find


@pytest.fixture(scope="session")
def sources(study_run: Callable[[str, list[str]], Path]) -> tuple[Path, Path]:
    """(vulnerability run, complexity run): the study's single-task LoRA runs (tiny-bert, seed 0)."""
    return study_run("single", ["vulnerability"]), study_run("single", ["complexity"])


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


@pytest.fixture(scope="session")
def llama_runs(merge_root: Path) -> dict[str, Path]:
    """tiny-llama single-task runs, one step each: clone in instruct form and repair (generated), both
    through the LM head, and vulnerability through a head of its own."""
    from mtpeft.config import validate_config
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.training.run import run_training

    formats = {"clone": "bigclonebench", "repair": "code-refinement", "vulnerability": "devign-jsonl"}
    data = {
        task: write_fixture_dataset(fmt, merge_root / "llama-data", n_per_split=8)
        for task, fmt in formats.items()
    }
    common = {"batch_size": 4, "eval_batch_size": 8, "max_length": 48}
    tasks = [
        {"task": "clone", "data": str(data["clone"]), "formulation": "instruct"} | common,
        {"task": "repair", "data": str(data["repair"]), "max_target_length": 8} | common,
        {"task": "vulnerability", "data": str(data["vulnerability"])} | common,
    ]
    config = {"name": "llama", "mode": "single", "model": "tiny-llama", "lr": 5e-3, "tasks": tasks}
    config |= {
        "max_steps": 1,
        "evaluate_splits": [],
        "workspace": str(merge_root / "llama-ws"),
        "baselines": False,
    }
    results = run_training(validate_config(config), progress=False)
    return {result.tasks[0]: result.run_dir for result in results}
