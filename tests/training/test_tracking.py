"""`log_with: tensorboard`: live curves a user opens in TensorBoard, read back from the event file.

One two-task run is stopped by Ctrl-C after step 3 (checkpoint at step 2) and resumed to step 4, the
way a user continues a run: the curves must hold every tag once per step 1..4 (the stopped attempt's
step 3 replaced, not doubled), validation tags at steps 2 and 4, and nothing written by a refused
tracker name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import mtpeft.training.trainer as trainer_module
from mtpeft.config import TrainConfig, load_config, validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import ConfigError
from mtpeft.layout import RUNS_DIR, run_dir_for
from mtpeft.training.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_STEPS, EVERY, STOP_AFTER = 4, 2, 3
TASKS = {"vulnerability": "devign-jsonl", "code-search": "codesearchnet"}
STEP_TAGS = [
    "loss/vulnerability",
    "loss/code-search",
    "loss_weight/vulnerability",
    "loss_weight/code-search",
    "lr/shared",
    "lr/heads",
    "throughput/tokens_per_s",
    "throughput/examples_per_s",
]
VALIDATION_TAGS = ["val/score", "val/vulnerability/f1", "val/code-search/mrr"]


def _config(data: dict[str, Path], workspace: Path, **fields) -> TrainConfig:
    return validate_config(
        {
            "name": "curves",
            "model": "tiny-bert",
            "tasks": [
                {"task": t, "data": str(p), "batch_size": 8, "max_length": 32} for t, p in data.items()
            ],
            "max_steps": MAX_STEPS,
            "eval_every": EVERY,
            "save_every": EVERY,
            "workspace": str(workspace),
            "evaluate_splits": [],
            "baselines": False,
            "log_with": "tensorboard",
        }
        | fields
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tracking-data")
    return {task: write_fixture_dataset(fmt, root, n_per_split=16) for task, fmt in TASKS.items()}


@pytest.fixture(scope="module")
def resumed(data, tmp_path_factory) -> TrainConfig:
    config = _config(data, tmp_path_factory.mktemp("tracking"))
    with pytest.MonkeyPatch.context() as patch:  # Ctrl-C after step 3, as a user would stop it
        patch.setattr(trainer_module, "_STEPS_IN_PROCESS", 0)
        patch.setenv("MTPEFT_INTERRUPT_AT_STEP", str(STOP_AFTER))
        with pytest.raises(KeyboardInterrupt):
            run_training(config, progress=False)
    run_training(config, resume=True, progress=False)
    return config


def _curves(config: TrainConfig) -> EventAccumulator:
    folder = run_dir_for(config) / "tracking" / config.name
    curves = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    curves.Reload()
    return curves


def _steps(curves: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in curves.Scalars(tag)]


def test_every_step_tag_has_one_value_per_step_across_a_resume(resumed):
    curves = _curves(resumed)
    for tag in STEP_TAGS:
        assert _steps(curves, tag) == [1, 2, 3, 4], tag
    # Values a user would read: finite losses, the equal weighting's 1/2, a positive throughput.
    assert all(e.value > 0 for e in curves.Scalars("loss/vulnerability"))
    assert {e.value for e in curves.Scalars("loss_weight/code-search")} == {0.5}
    assert all(e.value > 0 for e in curves.Scalars("throughput/examples_per_s"))
    # Linear warmup of 10% of 4 steps (0 steps), then linear decay from lr to 0 at step 4.
    assert [round(e.value, 6) for e in curves.Scalars("lr/shared")] == [3.75e-4, 2.5e-4, 1.25e-4, 0.0]


def test_validation_tags_are_at_the_validation_steps(resumed):
    curves = _curves(resumed)
    for tag in VALIDATION_TAGS:
        assert _steps(curves, tag) == [2, 4], tag
    assert not [tag for tag in curves.Tags()["scalars"] if tag.startswith("test/")]  # curve_test is off


def test_curves_do_not_change_the_run_key(data, tmp_path):
    assert _config(data, tmp_path).run_key() == _config(data, tmp_path, log_with=[]).run_key()


@pytest.mark.parametrize(
    ("log_with", "field", "says"),
    [
        ("tensorbored", "log_with", "unknown tracker 'tensorbored'; accelerate supports "),
        (["tensorboard", "weights-and-biases"], "log_with.1", "unknown tracker 'weights-and-biases'"),
    ],
)
def test_unknown_tracker_is_refused_before_anything_is_written(data, tmp_path, log_with, field, says):
    path = tmp_path / "train.yaml"
    config = _config(data, tmp_path / "ws", log_with=log_with)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        run_training(load_config(path), progress=False, source=path)
    assert caught.value.field == field and caught.value.path == str(path)
    assert says in str(caught.value) and "tensorboard" in str(caught.value)
    assert not (tmp_path / "ws" / RUNS_DIR).exists()


def test_tracker_not_installed_names_the_package(data, tmp_path, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match="tracker 'tensorboard' is not installed; pip install tensorboard"):
        run_training(_config(data, tmp_path / "ws"), progress=False)


def test_a_study_refuses_an_unknown_tracker_in_its_base_before_any_run(tmp_path):
    from typer.testing import CliRunner

    from mtpeft.cli.main import app
    from mtpeft.study.synthetic import synthetic_spec

    spec = synthetic_spec(workspace=tmp_path / "ws", methods=["lora"], task_sets=["single"])
    spec = spec.model_copy(update={"base": spec.base | {"log_with": ["tensorboard", "nope"]}})
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    result = CliRunner().invoke(app, ["study", str(study_file)])
    err = result.exception
    assert isinstance(err, ConfigError) and err.path == str(study_file), result.output
    assert err.field == "base.log_with.1" and "unknown tracker 'nope'" in str(err)
    assert not (tmp_path / "ws" / RUNS_DIR).exists()


def test_log_with_flag_replaces_the_configs_trackers(tmp_path):
    from typer.testing import CliRunner

    from mtpeft.cli.main import app

    path = tmp_path / "train.yaml"
    path.write_text(
        yaml.safe_dump({"tasks": [{"task": "vulnerability", "data": "d"}], "workspace": str(tmp_path)}),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["train", str(path), "--log-with", "tensorboard", "--log-with", "nope"])
    err = result.exception
    assert isinstance(err, ConfigError) and err.field == "log_with.1", result.output
    assert err.path == str(path) and "unknown tracker 'nope'" in str(err)
