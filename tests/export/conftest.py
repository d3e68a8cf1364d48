"""Tiny trained runs and their exports, shared by every export test (each trained and exported once).

The runs are the inference tests' tiny run (tests/api/conftest.py: tiny-bert, binary, multiclass, pair
and retrieval heads, each with its own token limit) trained with LoRA, IA3 and a bottleneck adapter;
IA3 and the adapter train for 8 steps only (what is checked is that the graph answers as the PyTorch
run does, whatever the run learnt). LoRA is exported twice: fp32 and int8.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

from tiny_run import train_tiny_run

SHORT_TRAINING = {"max_steps": 8, "eval_every": 8, "save_every": 8}


def _export(run_dir: Path, out: Path, quantize: str | None = None) -> Path:
    from mtpeft.export.build import export_run

    return export_run(run_dir, out, quantize=quantize).folder


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("lora-run"), name="lora")


@pytest.fixture(scope="session")
def ia3_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = {"method": "ia3", **SHORT_TRAINING}
    return train_tiny_run(tmp_path_factory.mktemp("ia3-run"), name="ia3", overrides=overrides)


@pytest.fixture(scope="session")
def adapter_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = {"method": "adapter", **SHORT_TRAINING}
    return train_tiny_run(tmp_path_factory.mktemp("adapter-run"), name="adapter", overrides=overrides)


@pytest.fixture(scope="session")
def lora_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(lora_run, tmp_path_factory.mktemp("exports") / "lora")


@pytest.fixture(scope="session")
def lora_int8_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(lora_run, tmp_path_factory.mktemp("exports") / "lora-int8", quantize="int8")


@pytest.fixture(scope="session")
def ia3_cli_export(ia3_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The IA3 run exported through the command line (`mtpeft export ... --check-examples 5`): the folder
    and what the command printed on stderr."""
    from mtpeft.cli.main import main

    out = tmp_path_factory.mktemp("exports") / "ia3"
    argv = ["mtpeft", "export", str(ia3_run), "--out", str(out), "--check-examples", "5"]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(io.StringIO()) as err:
        patch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exited:
            main()
    assert exited.value.code == 0, err.getvalue()
    return out, err.getvalue()


@pytest.fixture(scope="session")
def ia3_export(ia3_cli_export: tuple[Path, str]) -> Path:
    return ia3_cli_export[0]


@pytest.fixture(scope="session")
def adapter_export(adapter_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(adapter_run, tmp_path_factory.mktemp("exports") / "adapter")


@pytest.fixture(scope="session")
def lora_pair(lora_run: Path, lora_export: Path):
    """(the PyTorch run, its fp32 export), both loaded."""
    import mtpeft

    return mtpeft.load(lora_run, device="cpu", batch_size=5), mtpeft.load(lora_export, batch_size=5)


@pytest.fixture(scope="session")
def prefix_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = {"method": "prefix", "max_steps": 2, "eval_every": 2, "save_every": 2}
    return train_tiny_run(tmp_path_factory.mktemp("prefix-run"), name="prefix", overrides=overrides)


@pytest.fixture(scope="session")
def generative_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama with a head task (vulnerability) and a generated one (repair), one training step."""
    from mtpeft.config import validate_config
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.training.run import run_training

    root = tmp_path_factory.mktemp("generative-run")
    formats = {"vulnerability": "devign-jsonl", "repair": "code-refinement"}
    data = {task: write_fixture_dataset(fmt, root / "data", n_per_split=4) for task, fmt in formats.items()}
    tasks = [
        {"task": "vulnerability", "data": str(data["vulnerability"]), "max_length": 32},
        {"task": "repair", "data": str(data["repair"]), "max_length": 32, "max_target_length": 8},
    ]
    config = {"name": "gen", "model": "tiny-llama", "tasks": tasks, "max_steps": 1, "baselines": False}
    (trained,) = run_training(validate_config(config | {"workspace": str(root / "ws")}), progress=False)
    return Path(trained.run_dir)
