"""Lookahead task affinity: Z[i][j] as TAG defines it, undone bit for bit so the trained run is the run
without it; on a toy model exactly, then on tiny-bert through `mtpeft train`'s own path."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import ConfigError
from mtpeft.layout import AFFINITY_FILE, BEST_DIR, CHECKPOINTS_DIR, COST_FILE, HEADS_WEIGHTS, TRAIN_LOG
from mtpeft.modeling.distributed import Shard
from mtpeft.store import RunStore
from mtpeft.training.affinity import AffinityLog, check_supported, lookahead, undone
from mtpeft.training.run import run_training
from mtpeft.training.trainer import MultiTaskTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the measurement itself, on a toy model ----------------------------------------------------------
class Toy(nn.Module):
    """model(task, batch) -> that task's loss, as the trainer's model: one shared weight, a head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.heads = nn.ParameterDict(
            {"a": nn.Parameter(torch.tensor(0.5)), "b": nn.Parameter(torch.tensor(1.5))}
        )
        self.dropout = nn.Dropout(0.5)

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        return ((self.dropout(batch["x"]) * self.shared).sum() * self.heads[task] - batch["y"]) ** 2


def _toy_loss(model: Toy):
    return lambda task, batch: float(model(task, batch))


def test_lookahead_gives_tags_relative_loss_change_and_is_undone_bit_for_bit():
    torch.manual_seed(0)
    model = Toy().train()
    batches = [
        ("a", {"x": torch.tensor([1.0, 1.0]), "y": 1.0}),
        ("b", {"x": torch.tensor([1.0, -1.0]), "y": 0.0}),
    ]
    parameters = [model.shared, *model.heads.values()]
    flat = {  # a step moving only the shared weight, and one moving only b's head
        "a": torch.tensor([0.1, 0.0, 0.0, 0.0]),
        "b": torch.tensor([0.0, 0.0, 0.0, 0.2]),
    }
    params_before = [p.detach().clone() for p in parameters]
    rng_before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())

    z = lookahead(model, parameters, [1.0, 1.0, 1.0], flat, batches, _toy_loss(model))

    # By hand, without dropout (eval mode): L_a = ((1+2)*0.5 - 1)^2 = 0.25, L_b = ((1-2)*1.5)^2 = 2.25.
    # a's step: shared -> (0.9, 2.0): L_a = (2.9*0.5-1)^2 = 0.2025, L_b = (-1.1*1.5)^2 = 2.7225.
    assert z[("a", "a")] == pytest.approx(1 - 0.2025 / 0.25)
    assert z[("a", "b")] == pytest.approx(1 - 2.7225 / 2.25)  # negative: a's step hurts b
    # b's step moves b's head only (1.5 -> 1.3): a's loss is untouched, b's = (-1*1.3)^2.
    assert z[("b", "a")] == 0.0
    assert z[("b", "b")] == pytest.approx(1 - 1.69 / 2.25)
    assert all(torch.equal(p, q) for p, q in zip(parameters, params_before, strict=True))
    assert model.training and model.dropout.training  # the train/eval flags are restored
    assert torch.equal(torch.get_rng_state(), rng_before[0]) and random.getstate() == rng_before[1]
    assert np.array_equal(np.random.get_state()[1], rng_before[2])


def test_undone_restores_everything_even_when_the_measurement_fails():
    model = Toy()
    before = model.shared.detach().clone()
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError), undone(model, [model.shared]):
        with torch.no_grad():
            model.shared.add_(1.0)
        model.eval()
        torch.rand(3)  # draws random numbers
        raise RuntimeError("boom")
    assert torch.equal(model.shared, before) and model.training
    assert torch.equal(torch.get_rng_state(), state)


def test_log_averages_each_entry_over_the_measurements_that_measured_it():
    log = AffinityLog(every=2, tasks=["a", "b"])
    log.add(
        2, {("a", "a"): 0.1, ("a", "b"): -0.2, ("b", "a"): 0.3, ("b", "b"): 0.4}, seconds=1.0, positions=10
    )
    log.add(4, {("a", "a"): 0.3, ("a", "b"): 0.0}, seconds=0.5, positions=6)  # b absent from that step
    means, counts = log.matrix()
    assert means == [[pytest.approx(0.2), pytest.approx(-0.1)], [0.3, 0.4]]
    assert counts == [[2, 2], [1, 1]]
    summary = log.summary(backbone_params=1000)
    assert summary["measurements"] == 2 and summary["overhead"]["flops_estimate"] == 2.0 * 1000 * 16
    restored = AffinityLog(every=2, tasks=["a", "b"])
    restored.load_state_dict(json.loads(json.dumps(log.state_dict())))  # through a checkpoint's JSON
    assert restored.summary(backbone_params=1000) == summary


def test_several_processes_and_fp16_are_refused_by_name():
    config = validate_config(
        {"tasks": [{"task": "vulnerability"}, {"task": "clone"}], "affinity": {"every": 2}}
    )
    with pytest.raises(ConfigError, match="one process only") as err:
        check_supported(config, Shard(0, 2))
    assert err.value.field == "affinity"
    fp16 = config.model_copy(update={"mixed_precision": "fp16"})
    with pytest.raises(ConfigError, match="fp16"):
        check_supported(fp16, Shard(0, 1))


def test_affinity_is_not_part_of_the_run_key():
    tasks = [{"task": "vulnerability"}, {"task": "clone"}]
    plain = validate_config({"tasks": tasks})
    assert validate_config({"tasks": tasks, "affinity": {"every": 3}}).run_key() == plain.run_key()


# ---- the real path: tiny-bert, three tasks, off / every step / never due --------------------------------
MAX_STEPS = 4
KEPT = "kept-step-2"
FORMATS = {"vulnerability": "devign-jsonl", "clone": "bigclonebench", "code-search": "codesearchnet"}


def _config(root: Path, data: dict[str, Path], affinity: dict | None) -> dict:
    return {
        "name": "affinity",
        "model": "tiny-bert",
        "method": "lora",
        "lr": 5e-3,
        "warmup_ratio": 0.0,
        "tasks": [
            {"task": task, "data": str(path), "batch_size": 4, "max_length": 32, "max_query_length": 12}
            for task, path in data.items()
        ],
        "max_steps": MAX_STEPS,
        "eval_every": MAX_STEPS,
        "save_every": 2,  # one checkpoint, at step 2: its optimiser and random states are compared
        "workspace": str(root / "ws"),
        "baselines": False,
        "evaluate_splits": ["test"],
        **({"affinity": affinity} if affinity else {}),
    }


@pytest.fixture(scope="session")
def affinity_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories of the same run: `off`, `every` (measured at every step) and `never` (K > steps).
    A finished run deletes its checkpoints; each run's step-2 checkpoint is kept in RUN_DIR/kept-step-2."""
    root = tmp_path_factory.mktemp("affinity")
    data = {task: write_fixture_dataset(fmt, root / "data", n_per_split=12) for task, fmt in FORMATS.items()}
    settings = {"off": None, "every": {"every": 1}, "never": {"every": MAX_STEPS + 5}}
    checkpoint = MultiTaskTrainer._checkpoint

    def keeping(trainer: MultiTaskTrainer, state, meter) -> None:
        checkpoint(trainer, state, meter)
        shutil.copytree(_checkpoint(trainer.run_dir), trainer.run_dir / KEPT)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest for tiny models; session-scoped, so set here
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(MultiTaskTrainer, "_checkpoint", keeping)
            return {
                name: run_training(validate_config(_config(root / name, data, affinity)), progress=False)[
                    0
                ].run_dir
                for name, affinity in settings.items()
            }
    finally:
        torch.set_num_threads(threads)


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    best = run_dir / BEST_DIR
    adapter = next((best / "adapter").glob("*.safetensors"))
    return {f"adapter.{k}": v for k, v in load_file(adapter).items()} | {
        f"heads.{k}": v for k, v in load_file(best / HEADS_WEIGHTS).items()
    }


def _checkpoint(run_dir: Path) -> Path:
    (checkpoint,) = (run_dir / CHECKPOINTS_DIR).glob("step-*")
    return checkpoint


def _losses(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / TRAIN_LOG).read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


@pytest.mark.parametrize("measured", ["every", "never"])
def test_training_with_affinity_gives_the_weights_optimiser_and_random_state_of_the_run_without_it(
    affinity_runs, measured
):
    off, on = affinity_runs["off"], affinity_runs[measured]
    expected, got = _tensors(off), _tensors(on)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)  # bit for bit
    assert _losses(on) == _losses(off)  # every step's loss, to the last digit
    a, b = off / KEPT, on / KEPT  # step 2: after 2 lookaheads in the `every` run
    optimiser_a = torch.load(a / "optimizer.bin", weights_only=False)["state"]
    optimiser_b = torch.load(b / "optimizer.bin", weights_only=False)["state"]
    assert optimiser_a.keys() == optimiser_b.keys()
    for key, moments in optimiser_a.items():
        assert all(torch.equal(moments[name], optimiser_b[key][name]) for name in moments)
    random_a = torch.load(a / "random_states_0.pkl", weights_only=False)
    random_b = torch.load(b / "random_states_0.pkl", weights_only=False)
    assert torch.equal(random_a["torch_manual_seed"], random_b["torch_manual_seed"])
    assert random_a["random_state"] == random_b["random_state"]
    assert np.array_equal(random_a["numpy_random_seed"][1], random_b["numpy_random_seed"][1])


def test_affinity_json_holds_the_mean_matrix_its_counts_and_every_measurement(affinity_runs):
    written = json.loads((affinity_runs["every"] / AFFINITY_FILE).read_text())
    assert written["tasks"] == list(FORMATS) and written["every"] == 1
    assert written["measurements"] == len(written["history"]) == MAX_STEPS
    assert [h["step"] for h in written["history"]] == list(range(1, MAX_STEPS + 1))
    assert np.asarray(written["z"], dtype=float).shape == (3, 3)
    assert written["counts"] == [[MAX_STEPS] * 3] * 3
    assert all(np.isfinite(np.asarray(written["z"], dtype=float)).ravel())
    # A step on a task's own gradient lowers its own loss (lr 5e-3, no warm-up).
    assert all(written["z"][i][i] > 0 for i in range(3))
    never = json.loads((affinity_runs["never"] / AFFINITY_FILE).read_text())
    assert never["measurements"] == 0 and never["z"] == [[None] * 3] * 3


def test_the_store_keeps_the_matrix_and_the_cost_counts_the_overhead(affinity_runs):
    run_dir = affinity_runs["every"]
    (record,) = RunStore(run_dir.parents[1] / "mtpeft.sqlite").list_runs()
    written = json.loads((run_dir / AFFINITY_FILE).read_text())
    assert record.details["affinity"] == {k: v for k, v in written.items() if k != "history"}
    cost, plain = (json.loads((affinity_runs[n] / COST_FILE).read_text()) for n in ("every", "off"))
    overhead = written["overhead"]
    # Every measurement: 3 tasks' batches scored before and after each of the 3 lookaheads.
    assert overhead["forward_positions"] == cost["forward_only_positions"] > 0
    assert cost["train_flops_estimate"] - plain["train_flops_estimate"] == pytest.approx(
        overhead["flops_estimate"]
    )
    assert cost["affinity_flops_estimate"] == overhead["flops_estimate"]
    assert 0 < cost["affinity_wall_time_s"] < cost["wall_time_s"]
    assert "affinity_wall_time_s" not in plain


def test_mtpeft_group_proposes_modules_from_the_trained_runs_affinity(affinity_runs, monkeypatch, capsys):
    from mtpeft.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mtpeft", "group", str(affinity_runs["every"]), "--max-groups", "2"])
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    assert f"3 tasks grouped on lookahead affinity from {affinity_runs['every'] / AFFINITY_FILE}" in out
    modules = [line for line in out.splitlines() if line.startswith("module ")]
    assert len(modules) == 2  # within the budget
    assert sorted(t for line in modules for t in line.split(": ")[1].split(" (")[0].split(" + ")) == sorted(
        FORMATS
    )
