"""What a config file says is what runs: a key written twice, a label given twice, a `~` or an empty
workspace are refused or resolved once, the same way for train, study, prompt and task files (issue 24,
item 12). Before, `max_steps: 2` then `max_steps: 100000` trained 100,000 steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtpeft.config import load_config, with_absolute_paths
from mtpeft.errors import ConfigError
from mtpeft.prompting.config import load_prompt_config
from mtpeft.study.spec import load_study
from mtpeft.tasks import load_task_yaml

TASK = "name: t\nkind: binary\nformat: jsonl\nlabels: ['0', '1']\nmetrics: [f1]\n"
STUDY = "name: s\ntasks: [{task: vulnerability, data: d}]\ngrid: {methods: [lora]}\n"


def _write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refused(load, path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    return message


# ---- duplicate keys -----------------------------------------------------------------------------------
def test_the_issue_reproduction_max_steps_twice_is_refused_naming_line_and_key(tmp_path):
    path = _write(
        tmp_path, "name: t\nmax_steps: 2\ntasks:\n  - task: vulnerability\n    data: d\nmax_steps: 100000\n"
    )
    message = _refused(load_config, path)
    assert "line 6" in message and "'max_steps' appears twice" in message and "first at line 2" in message


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        # a nested block mapping, two levels down
        ("name: t\nmethod_options:\n  r: 4\n  alpha: 8\n  r: 16\ntasks: [{task: vulnerability}]\n", "r", 5),
        # a mapping inside a list entry
        (
            "name: t\ntasks:\n  - task: vulnerability\n    batch_size: 4\n    batch_size: 64\n",
            "batch_size",
            5,
        ),
        # a flow mapping on one line
        ("name: t\nmethod_options: {r: 4, r: 16}\ntasks: [{task: vulnerability}]\n", "r", 2),
        # the same key spelled as a quoted string
        ("name: t\nlr: 0.1\n'lr': 0.5\ntasks: [{task: vulnerability}]\n", "lr", 3),
    ],
)
def test_a_key_twice_in_any_mapping_is_refused(tmp_path, text, key, line):
    message = _refused(load_config, _write(tmp_path, text))
    assert f"line {line}" in message and f"'{key}' appears twice" in message


def test_merge_keys_may_still_be_overridden(tmp_path):
    text = (
        "name: t\nmethod_options:\n  <<: {r: 4, alpha: 8}\n  r: 16\n"
        "tasks:\n  - &entry {task: vulnerability, batch_size: 4}\n"
        "  - <<: *entry\n    name: v2\n    batch_size: 8\n"
    )
    config = load_config(_write(tmp_path, text))
    assert config.method_options == {"r": 16, "alpha": 8}
    assert [(t.label, t.batch_size) for t in config.tasks] == [("vulnerability", 4), ("v2", 8)]


def test_study_task_and_prompt_files_refuse_duplicate_keys_too(tmp_path):
    study = _write(tmp_path, STUDY + "grid: {methods: [full]}\n", "study.yaml")
    assert "'grid' appears twice" in _refused(load_study, study)
    task = _write(tmp_path, TASK + "kind: multiclass\n", "task.yaml")
    assert "'kind' appears twice" in _refused(load_task_yaml, task)
    prompt = _write(tmp_path, "model: m\nshots: 1\nshots: 3\ntasks: [{task: vulnerability}]\n", "p.yaml")
    with pytest.raises(ConfigError, match="'shots' appears twice"):
        load_prompt_config(prompt, {})


def test_a_set_override_with_a_key_twice_is_refused(tmp_path):
    path = _write(tmp_path, "name: t\ntasks: [{task: vulnerability}]\n")
    with pytest.raises(ConfigError, match="'r' appears twice"):
        load_config(path, ["method_options={r: 4, r: 8}"])


# ---- duplicate labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", ['["1", "1"]', "[a, b, c, b]", "['1', ' 1']"])
def test_a_label_twice_in_a_task_file_is_refused(tmp_path, labels):
    kind = "binary" if labels.count(",") == 1 else "multiclass"
    text = f"name: t\nkind: {kind}\nformat: jsonl\nlabels: {labels}\nmetrics: [f1]\n"
    message = _refused(load_task_yaml, _write(tmp_path, text, "task.yaml"))
    assert "field 'labels'" in message and "is given twice" in message


# ---- workspace ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "under_home"), [("~/ws", "ws"), ("~", "")])
def test_a_home_relative_workspace_is_the_home_folder_everywhere(tmp_path, monkeypatch, given, under_home):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, f"name: t\nworkspace: '{given}'\ntasks: [{{task: vulnerability}}]\n")
    config = load_config(path)
    expected = str(home / under_home) if under_home else str(home)
    assert config.workspace == expected
    assert with_absolute_paths(config, tmp_path).workspace == expected  # what config.yaml records
    from mtpeft.training.run import store_for

    store_for(config)  # where training makes the folder and the store
    assert Path(expected).is_dir()
    assert not (tmp_path / "~").exists()
    study = load_study(_write(tmp_path, STUDY + f"workspace: '{given}'\n", "study.yaml"))
    assert study.workspace == expected
    assert load_study(_write(tmp_path, STUDY, "s2.yaml")).with_workspace(given).workspace == expected


@pytest.mark.parametrize("blank", ["''", "'   '"])
def test_an_empty_workspace_is_refused(tmp_path, blank):
    path = _write(tmp_path, f"name: t\nworkspace: {blank}\ntasks: [{{task: vulnerability}}]\n")
    assert "field 'workspace'" in _refused(load_config, path)
    assert "workspace is empty" in _refused(
        load_study, _write(tmp_path, STUDY + f"workspace: {blank}\n", "s.yaml")
    )
    with pytest.raises(ConfigError, match="workspace is empty"):
        load_study(_write(tmp_path, STUDY, "s2.yaml")).with_workspace("")
