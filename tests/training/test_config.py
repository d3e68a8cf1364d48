"""Train configs: validated with errors naming the field; every field overridable."""

from __future__ import annotations

import pytest

from mtpeft.config import load_config
from mtpeft.errors import ConfigError


def _write(tmp_path, text: str):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_overrides_reach_nested_fields(tmp_path):
    path = _write(tmp_path, "tasks:\n  - task: vulnerability\n    data: d\nmax_steps: 10\n")
    cfg = load_config(path, ["max_steps=7", "tasks.0.batch_size=3", "method_options.r=4", "method=dora"])
    assert cfg.max_steps == 7 and cfg.tasks[0].batch_size == 3
    assert cfg.method_options == {"r": 4} and cfg.method == "dora"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("tasks:\n  - task: x\n    batch_size: 0\n", "tasks.0.batch_size"),
        ("tasks:\n  - task: x\nschedule: fifo\n", "schedule"),
        ("tasks:\n  - task: x\nlearning_rate: 1\n", "learning_rate"),
        ("tasks: []\n", "tasks"),
    ],
)
def test_bad_fields_are_named(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert f"field '{field}'" in str(err.value) and "train.yaml" in str(err.value)


def test_two_datasets_of_one_task_need_names(tmp_path):
    text = "tasks:\n  - task: vulnerability\n    data: a\n  - task: vulnerability\n    data: b\n"
    with pytest.raises(ConfigError, match="unique"):
        load_config(_write(tmp_path, text))
    text = text.replace("data: b", "data: b\n    name: vuln-b")
    assert [t.label for t in load_config(_write(tmp_path, text)).tasks] == ["vulnerability", "vuln-b"]
