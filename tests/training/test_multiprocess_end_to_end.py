"""Two processes (`torchrun --nproc_per_node 2`, gloo, CPU) divide the work of one run, as a user launches it.

One config with a classification, a pair and a code-search task on tiny-bert is trained once in one
process and once in two, each with MTPEFT_TRACE_BATCHES recording which examples every process took.
Dropout is 0 everywhere (LoRA, backbone, heads): dropout draws differ per process, so they would make
any two runs differ.

Tolerance of the trained weights, and why: the two runs add the same float32 numbers in another order
(a share's mean, then an all-reduce), which changes the last bits of each gradient (about 1e-7 relative:
the per-step losses below agree to 1e-6). AdamW divides each gradient by its running RMS, so where a
gradient is near zero (the code-search loss of a random tiny model is flat at ln(batch)) such bits
become visible in the update. Measured: the LoRA module and the classification heads agree within 1e-6,
the code-search projection within 7e-4 after 4 steps at lr 5e-3. The test allows 2e-3 for every tensor:
far below one step's change (lr = 5e-3 per weight), and a bug (each process on the same batch, a lost
share of the gradient, per-process negatives) changes the weights by whole steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtpeft.data.fixtures import write_fixture_dataset

STEPS = 4
BIN = Path(sys.executable).parent
WEIGHT_TOLERANCE = 2e-3


def _config(root: Path, data: dict[str, Path], **extra) -> Path:
    config = {
        "name": "ddp",
        "model": "tiny-bert",
        "method": "lora",
        "method_options": {"dropout": 0.0},
        "backbone_dropout": 0.0,
        "head_dropout": 0.0,
        "lr": 5e-3,
        "tasks": [
            {"task": task, "data": str(path), "batch_size": 5, "max_length": 48}
            for task, path in data.items()
        ],
        "max_steps": STEPS,
        "eval_every": 2,
        "save_every": 2,
        "seed": 0,
        "baselines": False,
    } | extra
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _env(trace: Path | None = None, **extra: str) -> dict[str, str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"} | extra
    if trace is not None:
        env["MTPEFT_TRACE_BATCHES"] = str(trace)
    return env


def _mtpeft(processes: int, *args: str) -> list[str]:
    if processes == 1:
        return [str(BIN / "mtpeft"), *args]
    return [
        str(BIN / "torchrun"),
        "--standalone",  # a free port on loopback: tests may run beside each other
        "--nproc_per_node",
        str(processes),
        "-m",
        "mtpeft.cli.main",
        *args,
    ]


def _run(
    processes: int, args: list[str], env: dict[str, str], *, ok: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(_mtpeft(processes, *args), env=env, capture_output=True, text=True, timeout=600)
    if ok and done.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} on {processes} process(es) exited {done.returncode}:\n{done.stderr[-4000:]}"
        )
    return done


def _train(root: Path, config: Path, processes: int, workspace: str, **env: str) -> Path:
    trace = root / f"{workspace}.trace"
    _run(
        processes,
        ["train", str(config), "--workspace", str(root / workspace), "--no-progress"],
        _env(trace, **env),
    )
    return root / workspace


def _run_dir(workspace: Path) -> Path:
    (run_dir,) = [p for p in (workspace / "runs").iterdir() if p.is_dir()]
    return run_dir


def _trace(root: Path, workspace: str, rank: int) -> list[dict]:
    path = root / f"{workspace}.trace.{rank}"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    weights = {}
    for path in sorted((run_dir / "best").rglob("*.safetensors")):
        for name, tensor in load_file(path).items():
            weights[f"{path.name}:{name}"] = tensor
    return weights


def _rows(workspace: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(workspace / "mtpeft.sqlite") as db:
        return db.execute("SELECT run_id, status FROM runs").fetchall()


def _metrics(run_dir: Path, split: str = "test") -> dict:
    return json.loads((run_dir / f"metrics.{split}.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", root / "data", n_per_split=20),
        "clone": write_fixture_dataset("bigclonebench", root / "data", n_per_split=20),
        "code-search": write_fixture_dataset("codesearchnet", root / "data", n_per_split=20),
    }
    config = _config(root, data, log_with="tensorboard")  # curves: test_two_processes_write_one_curve...
    return {
        "root": root,
        "config": config,
        "one": _train(root, config, 1, "one"),
        "two": _train(root, config, 2, "two"),
    }


def test_the_processes_take_disjoint_shares_that_make_up_each_global_batch(runs):
    root = runs["root"]
    alone = {(e["step"], e["task"]): e["indices"] for e in _trace(root, "one", 0)}
    shares = [{(e["step"], e["task"]): e["indices"] for e in _trace(root, "two", rank)} for rank in (0, 1)]
    assert set(alone) == set(shares[0]) == set(shares[1])
    assert len(alone) == STEPS * 3
    for key, batch in alone.items():
        first, second = shares[0][key], shares[1][key]
        assert first and second and not set(first) & set(second), key
        assert sorted(first + second) == sorted(batch), key  # together: exactly the one-process batch
        assert first == batch[0::2] and second == batch[1::2], key  # dealt out, longest first


def test_two_processes_train_the_one_process_adapter_and_heads(runs):
    import torch

    one, two = _weights(_run_dir(runs["one"])), _weights(_run_dir(runs["two"]))
    assert one.keys() == two.keys() and any(k.startswith("adapter") for k in one)
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=0, atol=WEIGHT_TOLERANCE, msg=name)


def test_two_processes_log_the_one_process_losses(runs):
    def losses(workspace: Path) -> list[dict]:
        lines = [json.loads(x) for x in (_run_dir(workspace) / "train.log").read_text().splitlines()]
        return [line["loss"] for line in lines if "loss" in line]

    one, two = losses(runs["one"]), losses(runs["two"])
    assert len(one) == len(two) == STEPS  # one log, written once (not once per process)
    for a, b in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=1e-5)


def test_two_processes_write_one_curve_of_the_one_process_losses(runs):
    """log_with: only the main process writes (one event file), and the curve is the global loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def curve(workspace: Path) -> tuple[list[Path], list[tuple[int, float]]]:
        folder = _run_dir(workspace) / "tracking" / "ddp"
        curves = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        curves.Reload()
        return sorted(folder.glob("events.*")), [(e.step, e.value) for e in curves.Scalars("loss/clone")]

    (one_file,), one = curve(runs["one"])
    (two_file,), two = curve(runs["two"])
    assert [step for step, _ in two] == [step for step, _ in one] == list(range(1, STEPS + 1))
    assert [value for _, value in two] == pytest.approx([value for _, value in one], rel=1e-5)


def test_one_store_row_and_only_the_main_process_took_the_run_lock(runs):
    """The run lock is exclusive: had the second process asked for it too, it would have been turned
    away ("already being trained by process ...") and the run could not have trained on both."""
    assert [status for _, status in _rows(runs["two"])] == ["finished"]
    pids = {_trace(runs["root"], "two", rank)[0]["pid"] for rank in (0, 1)}
    assert len(pids) == 2  # two processes trained
    run_dir = _run_dir(runs["two"])
    assert run_dir.with_name(run_dir.name + ".lock").exists()


def test_sharded_evaluation_gives_exactly_the_one_process_metrics_and_files(runs, tmp_path):
    run_dir = _run_dir(runs["two"])
    args = ["evaluate", str(run_dir), "--no-baselines", "--no-progress"]
    _run(1, args, _env())
    alone = _metrics(run_dir)
    predictions = {p.name: p.read_bytes() for p in (run_dir / "predictions" / "test").iterdir()}
    shutil.rmtree(run_dir / "predictions")
    _run(2, args, _env())
    assert _metrics(run_dir) == alone
    assert {p.name: p.read_bytes() for p in (run_dir / "predictions" / "test").iterdir()} == predictions


def test_sharded_evaluation_on_other_data_gives_exactly_the_one_process_scores(runs):
    """`evaluate --data`: each process scores its share, the main one records one evaluation."""
    run_dir = _run_dir(runs["two"])
    data = yaml.safe_load(runs["config"].read_text())["tasks"][0]["data"]
    args = ["evaluate", str(run_dir), "--data", f"vulnerability={data}", "--no-baselines", "--no-progress"]

    def evaluations() -> list[Path]:
        return sorted((run_dir / "predictions").rglob("evaluation.json"))

    def scores() -> list[dict]:
        return [json.loads(f.read_text())["metrics"] for f in evaluations()]

    _run(1, args, _env())
    alone = scores()
    shutil.rmtree(evaluations()[0].parent)
    _run(2, args, _env())
    assert scores() == alone and len(alone) == 1
    with sqlite3.connect(runs["two"] / "mtpeft.sqlite") as db:
        # one row, written by the main process (the second command replaced the first's: same data)
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 1


def test_a_killed_process_leaves_the_run_interrupted_and_two_processes_resume_it_to_the_same_metrics(runs):
    root = runs["root"]
    workspace = root / "killed"
    args = ["train", str(runs["config"]), "--workspace", str(workspace), "--no-progress"]
    # Process 1 is SIGKILLed after step 3 (a checkpoint was saved at step 2), as an OOM kill would.
    killed = _run(2, args, _env(MTPEFT_KILL_AT_STEP="3", MTPEFT_FAULT_RANK="1"), ok=False)
    assert killed.returncode != 0
    assert [status for _, status in _rows(workspace)] == ["interrupted"]
    _run(2, [*args, "--resume"], _env())
    assert [status for _, status in _rows(workspace)] == ["finished"]
    assert _metrics(_run_dir(workspace)) == _metrics(_run_dir(runs["two"]))
    log = (_run_dir(workspace) / "train.log").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log if '"loss"' in line]
    assert steps[-2:] == [3, 4] and steps.count(3) == 2  # step 3 trained again from the step-2 checkpoint


def test_several_processes_need_a_batch_each_can_share(runs, tmp_path):
    config = yaml.safe_load(runs["config"].read_text()) | {"workspace": str(tmp_path / "ws")}
    config["tasks"][0]["batch_size"] = 1
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    done = _run(2, ["train", str(path), "--no-progress"], _env(), ok=False)
    assert done.returncode != 0
    assert "tasks.0.batch_size is 1 but 2 processes share each batch" in done.stdout + done.stderr
    assert not (tmp_path / "ws" / "mtpeft.sqlite").exists()  # refused before anything was written


@pytest.mark.parametrize("weighting", ["gradnorm", "famo"])
def test_gradient_based_weightings_and_conflicts_on_two_processes_match_one(runs, tmp_path, weighting):
    root = runs["root"]
    data = {t["task"]: Path(t["data"]) for t in yaml.safe_load(runs["config"].read_text())["tasks"]}
    del data["clone"]
    config = _config(tmp_path, data, loss_weighting=weighting, grad_conflict_every=1, max_steps=3)
    one = _train(root, config, 1, f"{weighting}-one")
    two = _train(root, config, 2, f"{weighting}-two")

    def weights(workspace: Path) -> list[dict]:
        lines = [json.loads(x) for x in (_run_dir(workspace) / "train.log").read_text().splitlines()]
        return [line["loss_weights"] for line in lines if "loss" in line]

    for a, b in zip(weights(one), weights(two), strict=True):
        assert b == pytest.approx(a, rel=1e-4)
    conflict = [json.loads((_run_dir(w) / "grad_conflict.json").read_text()) for w in (one, two)]
    assert len(conflict[0]["history"]) == len(conflict[1]["history"]) == 3
    for a, b in zip(conflict[0]["history"], conflict[1]["history"], strict=True):
        assert b["cosine"] == pytest.approx(a["cosine"], rel=1e-3, abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)


def test_sigterm_helper_is_only_for_several_processes():
    """One process keeps Python's own SIGTERM (a study or server around it may rely on it)."""
    from mtpeft.modeling.distributed import Shard
    from mtpeft.training.run import _sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with _sigterm_as_interrupt(Shard()):
        assert signal.getsignal(signal.SIGTERM) is before
