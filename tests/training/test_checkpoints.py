"""Damaged checkpoints and a damaged best/: named, skipped or refused, never a traceback or a silent change.

One undamaged reference run and one run stopped after step 14 (checkpoints at 4, 8, 12; the last two
kept) are trained once per module; each damage case copies the stopped run's workspace, damages one
file and resumes in-process. The CPU runs are deterministic, so a correct fallback must end with the
reference run's exact test metrics.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import mtpeft.training.trainer as trainer_module
from mtpeft.config import TrainConfig, validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import DamagedFiles
from mtpeft.layout import run_dir_for
from mtpeft.manifest import MANIFEST_FILE, manifest_problem
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_STEPS, SAVE_EVERY, STOP_AFTER = 16, 4, 14
NEWEST, PREVIOUS = "step-0000012", "step-0000008"
# What accelerate's save_state writes for this run, plus the trainer's own state.
CHECKPOINT_FILES = [
    "model.safetensors",
    "optimizer.bin",
    "scheduler.bin",
    "random_states_0.pkl",
    "trainer_state.json",
]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _delete(path: Path) -> None:
    path.unlink()


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncate": (_truncate, "size"),
    "empty": (_empty, "size 0 != "),
    "delete": (_delete, "missing"),
    "flip": (_flip, "checksum mismatch"),
}


def _config(data: dict[str, Path], workspace: Path) -> TrainConfig:
    return validate_config(
        {
            "name": "ckpt",
            "model": "tiny-bert",
            "method": "lora",
            "lr": 5e-3,
            "tasks": [
                {"task": t, "data": str(p), "batch_size": 8, "max_length": 64} for t, p in data.items()
            ],
            "max_steps": MAX_STEPS,
            "eval_every": SAVE_EVERY,
            "save_every": SAVE_EVERY,
            "workspace": str(workspace),
            "seed": 0,
            "baselines": False,
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread) -> dict:
    root = tmp_path_factory.mktemp("checkpoints")
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", root / "data", n_per_split=32),
        "code-search": write_fixture_dataset("codesearchnet", root / "data", n_per_split=32),
    }
    reference = run_training(_config(data, root / "reference"), progress=False)[0]
    stopped = root / "stopped"
    with pytest.MonkeyPatch.context() as patch:  # Ctrl-C after step 14, as a user (or a kill) would stop it
        patch.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
        patch.setenv("MTPEFT_INTERRUPT_AT_STEP", str(STOP_AFTER))
        with pytest.raises(KeyboardInterrupt):
            run_training(_config(data, stopped), progress=False)
    return {"data": data, "reference": reference, "stopped": stopped}


def _resume_copy(runs: dict, tmp_path: Path, damage: Callable[[Path], None] | None = None) -> tuple:
    """Copy the stopped run's workspace, damage it, resume it; (result, run_dir) of the resumed run."""
    workspace = tmp_path / "ws"
    shutil.copytree(runs["stopped"], workspace)
    config = _config(runs["data"], workspace)
    run_dir = run_dir_for(config)
    if damage is not None:
        damage(run_dir / "checkpoints")
    return run_training(config, resume=True, progress=False)[0], run_dir


def _events(run_dir: Path, event: str) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "train.log").read_text().splitlines()]
    return [entry for entry in lines if entry.get("event") == event]


def _trained_steps(run_dir: Path) -> list[int]:
    lines = [json.loads(line) for line in (run_dir / "train.log").read_text().splitlines()]
    return [entry["step"] for entry in lines if "loss" in entry]


def test_the_stopped_run_keeps_its_last_two_checkpoints_each_with_a_manifest(runs):
    run_dir = run_dir_for(_config(runs["data"], runs["stopped"]))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == [PREVIOUS, NEWEST]  # step-4 pruned
    for name in checkpoints:
        assert manifest_problem(run_dir / "checkpoints" / name) is None
        listed = json.loads((run_dir / "checkpoints" / name / MANIFEST_FILE).read_text())["files"]
        assert set(CHECKPOINT_FILES) <= set(listed)
    assert manifest_problem(run_dir / "best") is None


def test_an_undamaged_resume_ends_with_the_reference_metrics(runs, tmp_path, capsys):
    result, run_dir = _resume_copy(runs, tmp_path)
    assert result.metrics["test"] == runs["reference"].metrics["test"]
    assert "damaged" not in capsys.readouterr().err
    assert _trained_steps(run_dir).count(13) == 2  # resumed from step-12: 13-14 ran twice


@pytest.mark.parametrize("damage_name", list(DAMAGES))
@pytest.mark.parametrize("filename", CHECKPOINT_FILES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    runs, tmp_path, capsys, filename, damage_name
):
    damage, symptom = DAMAGES[damage_name]
    result, run_dir = _resume_copy(runs, tmp_path, lambda c: damage(c / NEWEST / filename))

    message = f"checkpoint {NEWEST} of run ckpt is damaged ({filename}: "
    err = capsys.readouterr().err
    assert message in err and symptom in err and f"resuming from {PREVIOUS}" in err
    logged = _events(run_dir, "checkpoint-damaged")
    assert len(logged) == 1 and message in logged[0]["message"]
    # Steps 9-14 ran again from step-8, and the result is exactly the undamaged one's.
    assert _trained_steps(run_dir).count(9) == 2
    assert result.metrics["test"] == runs["reference"].metrics["test"]
    record = RunStore(tmp_path / "ws" / "mtpeft.sqlite").get(result.run_id)
    assert record.status == "finished" and record.metrics["test"] == runs["reference"].metrics["test"]
    stored = json.loads((run_dir / "metrics.test.json").read_text())["metrics"]
    assert stored == runs["reference"].metrics["test"]


@pytest.mark.parametrize("damage_name", ["delete", "flip"])
def test_a_damaged_manifest_counts_as_a_damaged_checkpoint(runs, tmp_path, capsys, damage_name):
    damage, _ = DAMAGES[damage_name]
    result, _ = _resume_copy(runs, tmp_path, lambda c: damage(c / NEWEST / MANIFEST_FILE))
    err = capsys.readouterr().err
    assert f"checkpoint {NEWEST} of run ckpt is damaged ({MANIFEST_FILE}: " in err
    assert f"resuming from {PREVIOUS}" in err
    assert result.metrics["test"] == runs["reference"].metrics["test"]


def test_with_no_intact_checkpoint_the_run_trains_again_from_step_0(runs, tmp_path, capsys):
    def damage_both(checkpoints: Path) -> None:
        _flip(checkpoints / NEWEST / "optimizer.bin")
        _truncate(checkpoints / PREVIOUS / "model.safetensors")

    result, run_dir = _resume_copy(runs, tmp_path, damage_both)
    err = capsys.readouterr().err
    assert "optimizer.bin: checksum mismatch" in err and "model.safetensors: size" in err
    assert err.count("no intact checkpoint is left: training this run again from step 0") == 2
    assert _trained_steps(run_dir).count(1) == 2  # the first attempt's step 1 and the new one
    assert result.metrics["test"] == runs["reference"].metrics["test"]


def test_a_checkpoint_cut_short_while_being_written_is_ignored(runs, tmp_path, capsys):
    def leave_a_partial_one(checkpoints: Path) -> None:  # a kill during save_state leaves `.tmp`
        partial = checkpoints / "step-0000016.tmp"
        shutil.copytree(checkpoints / NEWEST, partial)
        (partial / MANIFEST_FILE).unlink()
        _truncate(partial / "optimizer.bin")

    result, run_dir = _resume_copy(runs, tmp_path, leave_a_partial_one)
    assert "damaged" not in capsys.readouterr().err
    assert _trained_steps(run_dir).count(13) == 2  # resumed from step-12, the newest complete one
    assert result.metrics["test"] == runs["reference"].metrics["test"]


def test_a_redone_checkpoint_replaces_the_damaged_one_and_two_are_kept(runs, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(runs["stopped"], workspace)
    config = _config(runs["data"], workspace)
    run_dir = run_dir_for(config)
    _flip(run_dir / "checkpoints" / NEWEST / "scheduler.bin")
    stop_again = 15 - 8  # resumed at step 8: stop after step 15, past the redone step-12
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
        patch.setenv("MTPEFT_INTERRUPT_AT_STEP", str(stop_again))
        with pytest.raises(KeyboardInterrupt):
            run_training(config, resume=True, progress=False)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == [PREVIOUS, NEWEST]
    assert all(manifest_problem(run_dir / "checkpoints" / n) is None for n in names)


# ---- best/: the deployable -----------------------------------------------------------------------------
@pytest.fixture
def best_copy(runs, tmp_path) -> Path:
    """A copy of the reference run's directory (config + best/), to damage."""
    run_dir = tmp_path / runs["reference"].run_dir.name
    shutil.copytree(runs["reference"].run_dir, run_dir)
    return run_dir


def _best_files(runs: dict) -> list[str]:
    best = runs["reference"].run_dir / "best"
    return sorted(p.relative_to(best).as_posix() for p in best.rglob("*") if p.is_file())


def test_best_holds_the_module_the_heads_and_a_manifest_of_them(runs):
    files = _best_files(runs)
    assert MANIFEST_FILE in files and "heads.safetensors" in files
    assert any(f.startswith("adapter/") and f.endswith(".safetensors") for f in files)


@pytest.mark.parametrize("damage_name", ["truncate", "flip", "delete"])
@pytest.mark.parametrize("filename", ["heads.safetensors", "heads.json", "adapter/adapter_model.safetensors"])
def test_a_damaged_best_is_refused_by_load_trained_with_one_clear_error(best_copy, filename, damage_name):
    from mtpeft.evaluation.run_eval import load_trained

    damage, symptom = DAMAGES[damage_name]
    damage(best_copy / "best" / filename)
    with pytest.raises(DamagedFiles) as caught:
        load_trained(best_copy)
    message = str(caught.value)
    assert f"run {best_copy.name}'s best/ is damaged ({filename}: " in message and symptom in message
    assert "retrain it" in message


def test_mtpeft_evaluate_on_a_damaged_best_exits_with_one_message(best_copy, capsys, monkeypatch):
    from mtpeft.cli.main import main

    _truncate(best_copy / "best" / "heads.safetensors")
    monkeypatch.setattr(sys, "argv", ["mtpeft", "evaluate", str(best_copy), "--no-baselines"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "best/ is damaged (heads.safetensors: size" in lines[0], err
    assert "Traceback" not in err


def test_an_undamaged_best_loads_and_scores_as_recorded(best_copy, runs):
    from mtpeft.evaluation.run_eval import evaluate_run

    again, _ = evaluate_run(best_copy, "test", baselines=False, progress=False)
    assert again == runs["reference"].metrics["test"]
