"""The preflight: a broken config stops before anything is written (no store row, no run directory),
with one error naming the config file and the field. Before it, most of these failed only after
`store.start_run` had made a `failed` row and a run directory."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest
import yaml

from mtpeft.config import load_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import ConfigError, DataError, MtpeftError
from mtpeft.tasks.registry import builtin_tasks
from mtpeft.training.preflight import preflight


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fixture_dataset("devign-jsonl", tmp_path_factory.mktemp("data"), n_per_split=8)


def _write_config(tmp_path: Path, data: Path, **changes) -> Path:
    config = {
        "name": "pre",
        "model": "tiny-bert",
        "method": "lora",
        "tasks": [{"task": "vulnerability", "data": str(data), "batch_size": 4, "max_length": 32}],
        "max_steps": 1,
        "eval_every": 1,
        "save_every": 1,
        "workspace": str(tmp_path / "ws"),
        "baselines": False,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config | changes), encoding="utf-8")
    return path


def _task_yaml(tmp_path: Path, **changes) -> str:
    task = {"name": "mine", "kind": "binary", "format": "devign-jsonl", "labels": ["0", "1"]}
    task |= {"fields": {"code": "func", "label": "target", "id": "idx"}, "metrics": ["accuracy"]}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(task | changes), encoding="utf-8")
    return str(path)


def _nothing_written(workspace: Path) -> None:
    assert not (workspace / "mtpeft.sqlite").exists(), "a store (and a run row) was created"
    assert not (workspace / "runs").exists(), "a run directory was created"


def _train_fails(path: Path, overrides=()) -> MtpeftError:
    """`mtpeft train PATH` as the CLI runs it: load, then run_training (which preflights first)."""
    from mtpeft.training.run import run_training

    config = load_config(path, list(overrides))
    with pytest.raises(MtpeftError) as caught:
        run_training(config, progress=False, source=path)
    _nothing_written(Path(config.workspace))
    return caught.value


def _tasks(folder: Path, **changes) -> dict:
    return {"tasks": [{"task": "vulnerability", "data": str(folder)} | changes]}


# case: (config changes from (tmp_path, data folder), field the error names, words of the message)
BROKEN = {
    "unknown-task": (lambda t, d: _tasks(d, task="vulnerabilty"), "tasks.0.task", "unknown task"),
    "task-named-like-a-module": (lambda t, d: _tasks(d, task="os.path"), "tasks.0.task", "unknown task"),
    "task-name-with-dots": (lambda t, d: _tasks(d, name="../../escape"), "tasks.0.name", "contain '.'"),
    "task-name-of-a-module-attribute": (lambda t, d: _tasks(d, name="training"), "tasks.0.name", "training"),
    "task-yaml-named-keys": (lambda t, d: _tasks(d, task=_task_yaml(t, name="keys")), "tasks.0.task", "keys"),
    "not-trainable": (
        lambda t, d: _tasks(d, task=_task_yaml(t, trainable=False)),
        "tasks.0.task",
        "cannot be trained",
    ),
    "formulation-of-another-kind": (
        lambda t, d: _tasks(d, task="code-search", formulation="instruct"),
        "tasks.0.formulation",
        "trains in formulation heads, not 'instruct'",
    ),
    "lm-task-on-an-encoder": (
        lambda t, d: _tasks(d, formulation="instruct") | {"model": "tiny-bert"},
        "tasks.0",
        "language-model head",
    ),
    "no-data-folder": (lambda t, d: _tasks(d, data=str(t / "nope")), "tasks.0.data", "does not exist"),
    "data-is-a-file": (lambda t, d: _tasks(d, data=str(d / "test.jsonl")), "tasks.0.data", "is not a folder"),
    "task-yaml-bad-kind": (
        lambda t, d: _tasks(d, task=_task_yaml(t, kind="binaryy")),
        "tasks.0.task",
        "mine.yaml, field 'kind'",
    ),
    "task-yaml-unknown-format": (
        lambda t, d: _tasks(d, task=_task_yaml(t, format="csv")),
        "tasks.0.task",
        "field 'format': unknown",
    ),
    "task-yaml-unknown-metric": (
        lambda t, d: _tasks(d, task=_task_yaml(t, metrics=["acc"])),
        "tasks.0.task",
        "'metrics.0': unknown",
    ),
    "task-yaml-metric-of-another-kind": (
        lambda t, d: _tasks(d, task=_task_yaml(t, metrics=["mrr"])),
        "tasks.0.task",
        "'mrr' does not apply",
    ),
    "missing-evaluate-split": (lambda t, d: {"evaluate_splits": ["test", "holdout"]}, None, "'holdout'"),
    "model-folder-missing": (lambda t, d: {"model": "./models/mine"}, "model", "not a short name"),
    "model-folder-without-config": (lambda t, d: {"model": str(d)}, "model", "holds no config.json"),
    "model-not-a-hub-id": (lambda t, d: {"model": "my model!"}, "model", "hub id like 'org/name'"),
    "unknown-method": (lambda t, d: {"method": "lorra"}, "method", "unknown PEFT method"),
    "unknown-loss-weighting-option": (
        lambda t, d: {"loss_weighting": "famo", "loss_weighting_options": {"gama": 0.1}},
        "loss_weighting_options.gama",
        "its options: gamma, lr",
    ),
    "bad-loss-weighting-value": (
        lambda t, d: {"loss_weighting": "gradnorm", "loss_weighting_options": {"alpha": -1}},
        "loss_weighting_options.alpha",
        "must be a number >= 0",
    ),
    "workspace-is-a-file": (lambda t, d: {"workspace": str(d / "train.jsonl")}, "workspace", "is a file"),
    "workspace-under-a-file": (
        lambda t, d: {"workspace": str(d / "train.jsonl" / "ws")},
        "workspace",
        "cannot be created",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_leaves_no_store_row_and_no_run_dir(tmp_path, data, case):
    changes, field, words = BROKEN[case]
    path = _write_config(tmp_path, data, **changes(tmp_path, data))
    err = _train_fails(path)
    if field is None:  # a data problem: located in the data file, which is the place to fix
        assert isinstance(err, DataError) and words in str(err)
        return
    assert isinstance(err, ConfigError) and err.path == str(path) and err.field == field, str(err)
    assert words in str(err)


def test_broken_data_file_is_found_before_the_run(tmp_path, data):
    broken = tmp_path / "broken"
    broken.mkdir()
    for split in ("train", "valid", "test"):
        (broken / f"{split}.jsonl").write_text((data / f"{split}.jsonl").read_text())
    with (broken / "valid.jsonl").open("a") as handle:
        handle.write('{"func": "int f() {}", "target": 7, "idx": 99}\n')
    err = _train_fails(_write_config(tmp_path, data, **_tasks(broken)))
    assert isinstance(err, DataError) and "valid.jsonl, line 9, field 'target'" in str(err)


def test_read_only_workspace_is_refused_before_the_run(tmp_path, data, monkeypatch):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # Root writes through permission bits, so stand in for a read-only mount at the one write probe.
    import mtpeft.training.preflight as module

    def read_only(**_):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(module.tempfile, "mkstemp", read_only)
    err = _train_fails(_write_config(tmp_path, data))
    assert err.field == "workspace" and "is not writable (Read-only file system" in str(err)


def test_read_only_workspace_by_permissions(tmp_path, data):
    if sys.platform == "win32" or __import__("os").geteuid() == 0:
        pytest.skip("root (and Windows) ignore a folder's write permission bits")
    workspace = tmp_path / "ws"
    workspace.mkdir(mode=0o555)
    try:
        err = _train_fails(_write_config(tmp_path, data))
        assert err.field == "workspace" and "not writable" in str(err)
    finally:
        workspace.chmod(0o755)


def test_lr_inf_ends_with_a_clear_error_not_a_finished_run(tmp_path, data, capsys, monkeypatch):
    """The issue's "Done when": `mtpeft train CONFIG --set lr=.inf` is an error, exit 2, nothing written."""
    from mtpeft.cli.main import main

    path = _write_config(tmp_path, data)
    monkeypatch.setattr(sys, "argv", ["mtpeft", "train", str(path), "--set", "lr=.inf", "--no-progress"])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {path}, field 'lr': must be a finite number, got inf (set by --set 'lr=.inf')" in err
    assert "Traceback" not in err
    _nothing_written(tmp_path / "ws")


def test_cli_errors_name_the_config_file(tmp_path, data, capsys, monkeypatch):
    from mtpeft.cli.main import main

    path = _write_config(tmp_path, data, **_tasks(data, task="nope"))
    monkeypatch.setattr(sys, "argv", ["mtpeft", "train", str(path), "--no-progress"])
    with pytest.raises(SystemExit):
        main()
    err = capsys.readouterr().err
    assert f"error: {path}, field 'tasks.0.task': unknown task 'nope'" in err and "<config>" not in err
    _nothing_written(tmp_path / "ws")


def test_a_good_config_passes_and_writes_nothing(tmp_path, data):
    path = _write_config(tmp_path, data, model="org/some-model", evaluate_splits=["valid", "test"])
    config = load_config(path)
    preflight(config, source="train.yaml")
    assert not (tmp_path / "ws").exists()


def test_every_trainable_built_in_task_passes_the_task_checks():
    from mtpeft.training.preflight import _check_spec

    for spec in builtin_tasks().values():
        if spec.trainable:
            _check_spec(spec)


# ---- studies ---------------------------------------------------------------------------------------------
def _write_study(tmp_path: Path, data: Path, **grid) -> Path:
    study = {
        "name": "pre-study",
        "workspace": str(tmp_path / "ws"),
        "tasks": [{"task": "vulnerability", "data": str(data)}],
        "grid": {"models": ["tiny-bert"], "methods": ["lora"], "task_sets": ["single"]} | grid,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("grid", "field", "words"),
    [
        ({"models": ["tiny-bert", "./gone"]}, "grid.models.1", "not a short name"),
        ({"methods": ["lora", "lorra"]}, "grid.methods.1.name", "unknown PEFT method"),
    ],
)
def test_broken_study_stops_before_the_store_is_created(
    tmp_path, data, capsys, monkeypatch, grid, field, words
):
    from mtpeft.cli.main import main

    path = _write_study(tmp_path, data, **grid)
    for extra in (["--dry-run"], []):
        monkeypatch.setattr(sys, "argv", ["mtpeft", "study", str(path), "--no-progress", *extra])
        with pytest.raises(SystemExit) as code:
            main()
        assert code.value.code == 2
        err = capsys.readouterr().err
        assert f"error: {path}, field '{field}'" in err and words in err, err
        _nothing_written(tmp_path / "ws")


def test_study_base_errors_name_the_study_file(tmp_path, data, capsys, monkeypatch):
    from mtpeft.cli.main import main

    path = _write_study(tmp_path, data)
    study = yaml.safe_load(path.read_text())
    study["grid"]["methods"] = [{"name": "lora", "overrides": {"max_steps": 0}}]
    path.write_text(yaml.safe_dump(study))
    monkeypatch.setattr(sys, "argv", ["mtpeft", "study", str(path), "--dry-run"])
    with pytest.raises(SystemExit):
        main()
    err = capsys.readouterr().err
    assert f"error: {path}, field 'base.max_steps'" in err and "<config>" not in err, err
    _nothing_written(tmp_path / "ws")


def test_study_dry_run_creates_no_store(tmp_path, data, capsys, monkeypatch):
    from mtpeft.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mtpeft", "study", str(_write_study(tmp_path, data)), "--dry-run"])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 0 and "1 runs" in capsys.readouterr().out
    _nothing_written(tmp_path / "ws")
