"""Gradient conflict: each task's gradient on the shared module, read between the per-task backward
passes, and the cosine between tasks; on a toy model exactly, then on the real training path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.layout import GRAD_CONFLICT_FILE, run_dir_for
from mtpeft.training.grad_conflict import TaskGradients
from mtpeft.training.trainer import MultiTaskTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_step(losses: dict[str, torch.Tensor], shared: nn.Linear) -> TaskGradients:
    gradients = TaskGradients(list(shared.parameters()))
    for task, loss in losses.items():
        loss.backward(retain_graph=True)
        gradients.record(task)
    return gradients


def test_each_tasks_gradient_is_read_off_the_accumulated_one_exactly():
    torch.manual_seed(0)
    shared = nn.Linear(5, 3)
    out = shared(torch.randn(8, 5))
    losses = {"a": out.pow(2).mean(), "b": out.sum(), "c": -out.pow(2).mean()}
    alone = {
        t: torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(v, list(shared.parameters()), retain_graph=True)]
        )
        for t, v in losses.items()
    }
    gradients = _toy_step(losses, shared)
    for task, expected in alone.items():
        torch.testing.assert_close(gradients.by_task[task], expected)
    cosines = gradients.cosines()
    assert cosines[("a", "c")] == pytest.approx(-1.0)  # c = -a: exactly opposed
    assert gradients.norms()["a"] == pytest.approx(float(alone["a"].norm()))


# ---- the real path: tiny-bert, two tasks, heads made identical --------------------------------------
def _relabelled(folder: Path, out: Path, label: int) -> Path:
    """The same Devign records, every one with `label`."""
    out.mkdir(parents=True)
    for split in folder.glob("*.jsonl"):
        rows = [json.loads(line) for line in split.read_text().splitlines()]
        (out / split.name).write_text("\n".join(json.dumps(row | {"target": label}) for row in rows) + "\n")
    return out


@pytest.fixture(scope="module")
def devign(tmp_path_factory) -> dict[str, Path]:
    """One label per copy: with both labels in a batch, a fresh head's gradient is mostly the pull of its
    output towards the batch's label balance, which flipping every label leaves unchanged; with one label
    all of it is label signal, which flipping reverses."""
    root = tmp_path_factory.mktemp("conflict-data")
    records = write_fixture_dataset("devign-jsonl", root, n_per_split=32)
    return {
        "same": _relabelled(records, root / "ones", 1),
        "flipped": _relabelled(records, root / "zeros", 0),
    }


def _mean_cosine(data_b: Path, same: Path, workspace: Path) -> float:
    """Train task a on `same` and task b on `data_b`, both starting from the SAME head, so the shared
    module's gradients differ only by their data; the mean cosine of the run."""
    config = validate_config(
        {
            "name": "conflict",
            "model": "tiny-bert",
            "method": "lora",
            "lr": 1e-3,
            "tasks": [
                {"task": "vulnerability", "name": "a", "data": str(same), "batch_size": 8, "max_length": 64},
                {
                    "task": "vulnerability",
                    "name": "b",
                    "data": str(data_b),
                    "batch_size": 8,
                    "max_length": 64,
                },
            ],
            "grad_conflict_every": 1,
            "max_steps": 4,
            "eval_every": 4,
            "save_every": 4,
            "workspace": str(workspace),
            "baselines": False,
        }
    )
    run_dir = run_dir_for(config)
    run_dir.mkdir(parents=True)
    trainer = MultiTaskTrainer(config, run_dir, progress=False)
    heads = trainer.model.heads
    heads["b"].load_state_dict(heads["a"].state_dict())
    outcome = trainer.train(resume=False)
    written = json.loads((run_dir / GRAD_CONFLICT_FILE).read_text())
    assert written["measurements"] == len(written["history"]) == 4
    assert outcome.grad_conflict == {k: v for k, v in written.items() if k != "history"}
    return outcome.grad_conflict["pairs"]["a | b"]["mean"]


def test_two_tasks_with_identical_data_have_aligned_gradients(devign, tmp_path):
    # Not exactly 1: dropout draws a different mask for each task's micro-batch (without it: 1.0).
    assert _mean_cosine(devign["same"], devign["same"], tmp_path) > 0.8


def test_a_task_and_its_label_flipped_copy_have_conflicting_gradients(devign, tmp_path):
    assert _mean_cosine(devign["flipped"], devign["same"], tmp_path) < -0.8
