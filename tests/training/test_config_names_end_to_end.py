"""Hostile run and task names through the real CLI on a tiny run: every file stays in the workspace, and
names are printed as written, never read as console markup."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import yaml

from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.store import RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    from mtpeft.cli.main import main
    from mtpeft.report.console import console

    monkeypatch.setattr(console, "width", 400)  # long names on one line, so the test can find them
    monkeypatch.setattr(sys, "argv", ["mtpeft", *argv])
    with pytest.raises(SystemExit) as code:
        main()
    captured = capsys.readouterr()
    return code.value.code, captured.out, captured.err


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_tasks_named_outside_the_workspace_write_inside_it(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    formats = ("devign-jsonl", "flakeflagger-json")
    folders = {fmt: write_fixture_dataset(fmt, data, n_per_split=16) for fmt in formats}
    outside = Path(f"/tmp/mtpeft-evil-{uuid.uuid4().hex}/evil")  # an absolute task name
    config = {
        "name": "[/bold]",
        "model": "tiny-bert",
        "method": "lora",
        "tasks": [
            {"task": "vulnerability", "name": str(outside), "data": str(folders["devign-jsonl"])},
            {"task": "flaky", "name": "[/bold]/escape", "data": str(folders["flakeflagger-json"])},
        ],
        "max_steps": 2,
        "eval_every": 2,
        "save_every": 2,
        "workspace": str(tmp_path / "ws"),
        "baselines": False,
    }
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    before = _files(tmp_path)

    code, out, err = _cli(monkeypatch, capsys, "train", str(config_path), "--no-progress")
    assert code == 0, err
    assert "[/bold]: test scores" in out and "[/bold]/escape" in out and str(outside) in out

    written = _files(tmp_path) - before
    assert written and all((tmp_path / "ws") in p.parents for p in written), sorted(written)
    assert not outside.parent.exists()
    (run,) = RunStore(tmp_path / "ws" / "mtpeft.sqlite").list_runs()
    run_dir = Path(run.run_dir)
    assert run_dir.parent == tmp_path / "ws" / "runs" and run.tasks == [str(outside), "[/bold]/escape"]
    predictions = run_dir / "predictions" / "test"
    stems = {p.name.split(".")[0] for p in predictions.iterdir()}
    assert {s.rsplit("-", 1)[0] for s in stems} == {f"tmp-{outside.parent.name}-evil", "bold-escape"}

    # `mtpeft evaluate` rewrites the prediction files from the saved run: still inside.
    code, out, err = _cli(monkeypatch, capsys, "evaluate", str(run_dir), "--no-baselines")
    assert code == 0, err
    assert all((tmp_path / "ws") in p.parents for p in _files(tmp_path) - before)

    code, out, _ = _cli(monkeypatch, capsys, "runs", "--workspace", str(tmp_path / "ws"))
    assert code == 0 and "[/bold]" in out


def test_markup_and_control_characters_in_names_print_as_written(tmp_path, monkeypatch, capsys):
    from mtpeft.report.console import plain, scores_table

    store = RunStore(tmp_path / "mtpeft.sqlite")
    for name in ("[/bold]", "[red]x[/red]", ":x:", "esc\x1b[31mred"):
        fields = dict(study=None, group_id=None, mode="multi", model="[m]", method="lora", tasks=["[/t]"])
        store.start_run(name=name, seed=0, config={"key": name}, run_dir=str(tmp_path / "r"), **fields)
    code, out, err = _cli(monkeypatch, capsys, "runs", "--workspace", str(tmp_path))
    assert code == 0, err
    for shown in ("[/bold]", "[red]x[/red]", ":x:", "esc\\x1b[31mred", "[m]", "[/t]"):
        assert shown in out, out
    assert "\x1b" not in out

    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(scores_table("[/bold] title", [("[/t]", "f1", {"[b]": 0.5}, {})], ["[b]"]))
    console.print(plain("[/bold] path"))
    text = console.export_text()
    assert "[/bold] title" in text and "[/t]" in text and "[b]" in text and "[/bold] path" in text


def test_study_with_a_markup_name_prints_as_written(tmp_path, monkeypatch, capsys):
    data = write_fixture_dataset("devign-jsonl", tmp_path / "data", n_per_split=8)
    study = {
        "name": "[/bold]",
        "workspace": str(tmp_path / "ws"),
        "tasks": [{"task": "vulnerability", "name": "[/x]", "data": str(data)}],
        "grid": {"models": ["tiny-bert"], "methods": [{"name": "lora", "label": "[/m]"}]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    code, out, err = _cli(monkeypatch, capsys, "study", str(path), "--dry-run")
    assert code == 0, err
    assert "Study [/bold]" in out and "[/x]" in out and "[/m]" in out
