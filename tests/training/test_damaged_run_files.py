"""Item 11 of issue 24: damaged files of a run directory are one message naming the file and what to
do. `--resume` on a truncated (or `null`, or list) run.json or a `checkpoints` that is a file, and
load/evaluate/predict on a best/ without its manifest whose heads.json is truncated or not an object,
were JSONDecodeError/AttributeError/NotADirectoryError tracebacks."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from mtpeft.config import TrainConfig, validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import DamagedFiles
from mtpeft.layout import run_dir_for
from mtpeft.store import RunStore
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(data: Path, workspace: Path) -> TrainConfig:
    return validate_config(
        {
            "name": "damaged",
            "model": "tiny-bert",
            "method": "lora",
            "max_steps": 4,
            "eval_every": 2,
            "save_every": 2,
            "workspace": str(workspace),
            "baselines": False,
            "seed": 0,
            "tasks": [{"task": "vulnerability", "data": str(data), "batch_size": 4, "max_length": 32}],
        }  # fmt: skip
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread) -> dict:
    root = tmp_path_factory.mktemp("damaged")
    data = write_fixture_dataset("devign-jsonl", root / "data", n_per_split=8)
    run_training(_config(data, root / "ws"), progress=False)
    return {"data": data, "workspace": root / "ws"}


@pytest.fixture
def copy(trained, tmp_path) -> tuple[TrainConfig, Path]:
    workspace = tmp_path / "ws"
    shutil.copytree(trained["workspace"], workspace)
    config = _config(trained["data"], workspace)
    return config, run_dir_for(config)


RUN_FILES = {
    "truncated": '{"run_id": "ab',
    "null": "null",
    "a-list": '["run_id"]',
    "no-run-id": '{"group_id": null}',
    "not-utf8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("content", sorted(RUN_FILES))
def test_resume_on_a_damaged_run_json_is_one_message_and_changes_nothing(copy, content):
    config, run_dir = copy
    value = RUN_FILES[content]
    (run_dir / "run.json").write_bytes(value if isinstance(value, bytes) else value.encode())
    store = RunStore(Path(config.workspace) / "mtpeft.sqlite")
    before = [(r.run_id, r.status) for r in store.list_runs()]
    with pytest.raises(DamagedFiles) as caught:
        run_training(config, resume=True, progress=False)
    message = str(caught.value)
    assert str(run_dir / "run.json") in message and "without --resume" in message
    assert [(r.run_id, r.status) for r in store.list_runs()] == before


WRONG_KINDS = [("checkpoints", "file"), ("best", "file"), ("train.log", "folder")]


@pytest.mark.parametrize(("name", "kind"), WRONG_KINDS)
def test_resume_with_a_part_of_the_wrong_kind_is_one_message(copy, name, kind):
    config, run_dir = copy
    path = run_dir / name
    shutil.rmtree(path, ignore_errors=True)
    path.unlink(missing_ok=True)
    path.mkdir() if kind == "folder" else path.write_text("not mtpeft's")
    with pytest.raises(DamagedFiles) as caught:
        run_training(config, resume=True, progress=False)
    assert str(path) in str(caught.value) and "move it out of the way" in str(caught.value)
    assert path.exists()  # the user's file: reported, never deleted


HEADS = {
    "truncated": None,  # the real file cut in half
    "a-list": "[1, 2]",
    "null": "null",
    "no-tasks": '{"format_version": 3, "pooling": "mean"}',
    "version-a-string": '{"format_version": "3", "tasks": {}, "pooling": "mean"}',
}


def _damage_best(run_dir: Path, how: str) -> Path:
    best = run_dir / "best"
    (best / "MANIFEST.json").unlink()
    heads = best / "heads.json"
    text = HEADS[how]
    heads.write_text(heads.read_text()[: heads.stat().st_size // 2] if text is None else text)
    return heads


@pytest.mark.parametrize("how", sorted(HEADS))
def test_a_best_without_manifest_and_a_damaged_heads_json_is_one_message(copy, how):
    import mtpeft

    _, run_dir = copy
    heads = _damage_best(run_dir, how)
    with pytest.raises(DamagedFiles) as caught:
        mtpeft.load(run_dir, device="cpu")
    assert str(heads) in str(caught.value) and "retrain it" in str(caught.value)


def test_a_best_that_only_lost_its_manifest_is_refused_as_damaged(copy):
    from mtpeft.modeling.build import load_trained

    _, run_dir = copy
    (run_dir / "best" / "MANIFEST.json").unlink()
    with pytest.raises(DamagedFiles, match="MANIFEST.json: missing"):
        load_trained(run_dir)


@pytest.mark.parametrize("command", ["evaluate", "predict", "evaluate --data"])
def test_the_cli_on_a_damaged_heads_json_prints_one_line(
    copy, trained, command, tmp_path, monkeypatch, capsys
):
    from mtpeft.cli.main import main

    _, run_dir = copy
    _damage_best(run_dir, "truncated")
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"code": "int f() { return 1; }"}\n')
    argv = {
        "evaluate": ["evaluate", str(run_dir), "--no-baselines", "--no-progress"],
        "predict": ["predict", str(run_dir), str(lines)],
        "evaluate --data": ["evaluate", str(run_dir), "--data", f"vulnerability={trained['data']}"],
    }[command]
    monkeypatch.setattr(sys, "argv", ["mtpeft", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "heads.json is damaged" in err
