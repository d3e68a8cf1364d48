"""Running a study: finished runs are skipped, interrupted ones resumed, failures retried once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.errors import ConfigError
from mtpeft.store import RunStore
from mtpeft.study.grid import expand, run_key_of
from mtpeft.study.runner import run_study, store_path
from mtpeft.study.spec import StudySpec
from mtpeft.study.synthetic import record_run, synthetic_spec


class FakeTrainer:
    """Stands in for run_training: records the call and writes a finished run like the real one."""

    def __init__(self, fail_times: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail_times = dict(fail_times or {})

    def __call__(self, config, *, resume: bool, progress: bool):
        run = next(r for r in expand(self.spec) if r.key == run_key_of(config))
        self.calls.append((run.display_name, resume))
        if self.fail_times.get(run.display_name, 0) > 0:
            self.fail_times[run.display_name] -= 1
            raise RuntimeError("CUDA out of memory (simulated)")
        record_run(RunStore(Path(config.workspace) / "mtpeft.sqlite"), run, per_example=False)

    def bind(self, spec: StudySpec) -> FakeTrainer:
        self.spec = spec
        return self


@pytest.fixture
def spec(tmp_path) -> StudySpec:
    spec = synthetic_spec(workspace=tmp_path, methods=["lora"], task_sets=["single", "all"])
    for task in ("py-defect", "py-clone", "py-search"):
        (tmp_path / "data" / task).mkdir(parents=True)
    return spec


def test_second_invocation_trains_nothing(spec):
    first = FakeTrainer().bind(spec)
    outcomes = run_study(spec, run_fn=first, progress=False)
    assert len(first.calls) == 4 and {o.status for o in outcomes} == {"trained"}
    again = FakeTrainer().bind(spec)
    outcomes = run_study(spec, run_fn=again, progress=False)
    assert again.calls == []
    assert [o.status for o in outcomes] == ["skipped"] * 4


def test_only_missing_runs_are_trained_after_the_grid_grows(spec):
    run_study(spec, run_fn=FakeTrainer().bind(spec), progress=False)
    bigger = spec.model_copy(update={"grid": spec.grid.model_copy(update={"seeds": [0, 1]})})
    trainer = FakeTrainer().bind(bigger)
    run_study(bigger, run_fn=trainer, progress=False)
    assert len(trainer.calls) == 4 and all("-s1" in name for name, _ in trainer.calls)


def test_a_failure_is_retried_once_from_scratch_and_others_go_on(spec):
    name = expand(spec)[0].display_name
    trainer = FakeTrainer(fail_times={name: 1}).bind(spec)
    outcomes = run_study(spec, run_fn=trainer, progress=False)
    assert trainer.calls[:2] == [(name, True), (name, False)]  # first resumes, retry starts clean
    assert outcomes[0].status == "trained" and outcomes[0].attempts == 2


def test_a_run_failing_twice_is_reported_with_its_error(spec):
    name = expand(spec)[1].display_name
    trainer = FakeTrainer(fail_times={name: 5}).bind(spec)
    outcomes = run_study(spec, run_fn=trainer, progress=False)
    failed = [o for o in outcomes if o.status == "failed"]
    assert len(failed) == 1 and failed[0].attempts == 2 and "out of memory" in failed[0].error
    assert sum(o.status == "trained" for o in outcomes) == 3


def test_an_interrupted_run_is_resumed(spec):
    run = expand(spec)[0]
    store = RunStore(store_path(spec))
    run_id = store.start_run(
        name=run.display_name,
        study=spec.name,
        group_id=None,
        mode="single",
        model="minilm",
        method="lora",
        tasks=list(run.group),
        seed=0,
        config=run.config.hashable() | {"key": run.key},
        run_dir=str(Path(spec.workspace) / "runs" / "x"),
    )
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with sqlite3.connect(store_path(spec)) as db:  # as if its process had been killed
        db.execute("UPDATE runs SET pid=? WHERE run_id=?", (int(dead.stdout), run_id))
    assert store.get(run_id).status == "interrupted"
    trainer = FakeTrainer().bind(spec)
    outcomes = run_study(spec, run_fn=trainer, progress=False)
    assert trainer.calls[0] == (run.display_name, True)
    assert outcomes[0].previous == "interrupted" and outcomes[0].status == "trained"


def test_missing_data_is_a_clear_error_before_anything_trains(tmp_path):
    spec = synthetic_spec(workspace=tmp_path, methods=["lora"], task_sets=["single"])
    trainer = FakeTrainer().bind(spec)
    with pytest.raises(ConfigError, match="build-default"):
        run_study(spec, run_fn=trainer, progress=False)
    assert trainer.calls == []


def test_ray_executor_without_ray_says_how_to_install_it(spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, installed or not
    with pytest.raises(ConfigError, match=r"pip install 'mtpeft\[ray\]'"):
        run_study(spec, run_fn=FakeTrainer().bind(spec), executor="ray", progress=False)


def test_unknown_executor_lists_the_known_ones(spec):
    with pytest.raises(ConfigError, match="local, ray"):
        run_study(spec, run_fn=FakeTrainer().bind(spec), executor="slurm", progress=False)


def _write_yaml(spec: StudySpec, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    return path


def test_dry_run_lists_runs_actions_and_cost_without_training(spec, tmp_path):
    from mtpeft.cli.main import app

    record_run(RunStore(store_path(spec)), expand(spec)[0], per_example=False)
    study_file = _write_yaml(spec, tmp_path / "study.yaml")
    result = CliRunner().invoke(app, ["study", str(study_file), "--dry-run"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "4 runs" in result.output
    lines = result.output.splitlines()
    assert sum(" skip " in line for line in lines) == 1 and sum(" new " in line for line in lines) == 3
    assert "To run: 3 of 4" in result.output
    # A finished minilm/lora run with its wall time is in the store: the time estimate is known.
    assert "time from measured throughput" in result.output and "unknown" not in result.output
    assert "FLOPs" in result.output
    assert len(RunStore(store_path(spec)).list_runs()) == 1  # nothing trained


def test_dry_run_on_an_empty_store_says_time_is_unknown(spec, tmp_path):
    from mtpeft.cli.main import app

    result = CliRunner().invoke(app, ["study", str(_write_yaml(spec, tmp_path / "s.yaml")), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "training time unknown" in result.output and "no finished run of that model" in result.output


def test_a_bad_loss_weighting_option_stops_the_study_before_any_run(spec, tmp_path):
    from mtpeft.cli.main import app

    broken = spec.model_copy(
        update={"base": spec.base | {"loss_weighting": "famo", "loss_weighting_options": {"gama": 1}}}
    )
    study_file = _write_yaml(broken, tmp_path / "study.yaml")
    result = CliRunner().invoke(app, ["study", str(study_file)], env={"COLUMNS": "200"})
    err = result.exception  # `mtpeft` (cli.main.main) prints it as one `error:` line, exit code 2
    assert isinstance(err, ConfigError) and err.path == str(study_file), result.output
    assert err.field == "base.loss_weighting_options.gama" and "gamma, lr" in str(err)
    assert not Path(store_path(broken)).exists() or RunStore(store_path(broken)).list_runs() == []
