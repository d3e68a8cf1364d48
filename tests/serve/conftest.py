"""Served tiny runs: the inference tests' tiny trained run (tests/api/conftest.py) behind the app, and a
tiny-llama run with tasks trained through the LM head (instruct clone, generated repair)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tiny_run import train_tiny_run


@pytest.fixture(scope="session")
def served_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("served-run"))


@pytest.fixture(scope="session")
def served_run(served_run_dir: Path):
    import mtpeft

    return mtpeft.load(served_run_dir, device="cpu", batch_size=64)


@pytest.fixture
def client(served_run) -> Iterator:
    from fastapi.testclient import TestClient

    from mtpeft.serve.app import create_app
    from mtpeft.serve.settings import Limits

    app = create_app(
        {"tiny": served_run}, limits=Limits(max_body_bytes=50_000, max_snippets=8, max_chars=2_000)
    )
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture(scope="session")
def gen_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama: vulnerability with a head, clone in instruct form, repair generated; one shared LoRA."""
    from mtpeft.config import validate_config
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.training.run import run_training

    root = tmp_path_factory.mktemp("gen-serve")
    formats = {"vulnerability": "devign-jsonl", "clone": "bigclonebench", "repair": "code-refinement"}
    data = {task: write_fixture_dataset(fmt, root / "data", n_per_split=8) for task, fmt in formats.items()}
    common = {"batch_size": 4, "eval_batch_size": 8, "max_length": 48}
    tasks = [
        {"task": "vulnerability", "data": str(data["vulnerability"])} | common,
        {"task": "clone", "data": str(data["clone"]), "formulation": "instruct"} | common,
        {"task": "repair", "data": str(data["repair"]), "max_target_length": 12} | common,
    ]
    config = {"name": "gen", "model": "tiny-llama", "lr": 5e-3, "tasks": tasks, "max_steps": 2}
    config |= {"workspace": str(root / "ws"), "baselines": False}
    (trained,) = run_training(validate_config(config), progress=False)
    return Path(trained.run_dir)


@pytest.fixture(scope="session")
def gen_run(gen_run_dir: Path):
    import mtpeft

    return mtpeft.load(gen_run_dir, device="cpu")
