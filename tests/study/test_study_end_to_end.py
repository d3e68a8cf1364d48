"""One real (tiny) study: tiny-bert on fixture data, trained, resumed as finished, reported."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.store import RunStore
from mtpeft.study.spec import parse_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-study")
    data = {
        "vulnerability": write_fixture_dataset("devign-jsonl", root / "data", n_per_split=24),
        "code-search": write_fixture_dataset("codesearchnet", root / "data", n_per_split=24),
    }
    spec = parse_study(
        {
            "name": "tiny",
            "workspace": str(root / "ws"),
            "base": {"max_steps": 4, "eval_every": 4, "save_every": 4, "lr": 0.005, "baselines": False},
            "tasks": [
                {"task": t, "data": str(p), "batch_size": 8, "max_length": 48} for t, p in data.items()
            ],
            "grid": {
                "models": ["tiny-bert"],
                "methods": ["lora"],
                "task_sets": ["single", "all"],
                "seeds": [0],
            },
        }
    )
    path = root / "study.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    return spec, path


def test_tiny_study_trains_skips_and_reports(study, tmp_path):
    from mtpeft.cli.main import app

    spec, path = study
    runner = CliRunner()
    first = runner.invoke(app, ["study", str(path), "--no-progress"])
    assert first.exit_code == 0, first.output
    records = RunStore(f"{spec.workspace}/mtpeft.sqlite").list_runs(study="tiny")
    assert sorted((r.mode, tuple(r.tasks), r.status) for r in records) == [
        ("multi", ("vulnerability", "code-search"), "finished"),
        ("single", ("code-search",), "finished"),
        ("single", ("vulnerability",), "finished"),
    ]
    again = runner.invoke(app, ["study", str(path), "--no-progress"])
    assert again.exit_code == 0 and again.output.count("skipped") == 3
    assert len(RunStore(f"{spec.workspace}/mtpeft.sqlite").list_runs()) == 3

    out = tmp_path / "report"
    report = runner.invoke(app, ["report", "--workspace", spec.workspace, "--out", str(out)])
    assert report.exit_code == 0, report.output
    markdown = (out / "report.md").read_text()
    assert "| tiny-bert / lora | vulnerability | accuracy |" in markdown
    assert "| tiny-bert / lora | code-search | mrr |" in markdown
    # One seed and real per-example prediction files: the interval comes from a paired bootstrap.
    assert "paired bootstrap over 24 test examples" in markdown
