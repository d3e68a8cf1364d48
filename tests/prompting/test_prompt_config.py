"""Prompting configs, run keys, the backend registry and the store's details column."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mtpeft.errors import ConfigError
from mtpeft.prompting.backends import BACKENDS, backend_kind
from mtpeft.prompting.config import PromptConfig, load_prompt_config, parse_modes, parse_task_option
from mtpeft.prompting.runner import run_dir_for
from mtpeft.store import RunStore

TASKS = [{"task": "py-defect", "data": "data/py-defect"}]


def test_modes_parse_with_shorthands_in_a_fixed_order():
    assert parse_modes("both") == ("generate", "score")
    assert parse_modes("all") == ("generate", "score", "embed")
    assert parse_modes("embed, generate") == ("generate", "embed")
    with pytest.raises(ValueError, match="unknown answer mode 'guess'"):
        parse_modes("guess")


def test_task_options_take_name_and_folder():
    assert parse_task_option("py-defect=data/d") == {"task": "py-defect", "data": "data/d"}
    assert parse_task_option("my.yaml") == {"task": "my.yaml"}
    with pytest.raises(ConfigError, match="NAME=DATA_DIR"):
        parse_task_option("py-defect=")


def test_flags_override_the_yaml_and_errors_name_the_file(tmp_path):
    path = tmp_path / "prompt.yaml"
    path.write_text("model: tiny-llama\nshots: 2\ntasks:\n  - {task: py-defect, data: d}\n")
    config = load_prompt_config(path, {"shots": 5, "limit": None})
    assert (config.model, config.shots, config.limit) == ("tiny-llama", 5, None)
    path.write_text("model: tiny-llama\nshots: -1\ntasks:\n  - {task: py-defect, data: d}\n")
    with pytest.raises(ConfigError, match="shots") as err:
        load_prompt_config(path, {})
    assert str(path) in str(err.value)


def test_run_keys_separate_shots_but_share_the_embedding_run(tmp_path):
    zero = PromptConfig(tasks=TASKS, workspace=str(tmp_path), shots=0)
    five = zero.model_copy(update={"shots": 5, "batch_size": 64})
    assert run_dir_for(zero, "generate") != run_dir_for(five, "generate")
    assert run_dir_for(zero, "embed") == run_dir_for(five, "embed")
    assert run_dir_for(zero, "score").name.startswith("prompt-score-0shot-")
    faster = zero.model_copy(update={"batch_size": 64, "concurrency": 9})
    assert run_dir_for(zero, "score") == run_dir_for(faster, "score")  # speed settings are no part of it


def test_backends_are_chosen_by_model_string_and_imported_lazily():
    assert set(BACKENDS) >= {"local", "openai"}
    assert (
        backend_kind("openai:http://127.0.0.1:8080/v1") == "openai"
        and backend_kind("smollm2-135m") == "local"
    )
    code = "import sys, mtpeft.prompting.runner, mtpeft.cli.main\n"
    code += "print('torch' in sys.modules, 'openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_store_keeps_run_details(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    fields = dict(study=None, group_id=None, mode="prompting", model="m", method="prompt-generate-0shot")
    run_id = store.start_run(name="p", tasks=["t"], seed=0, config={}, run_dir="r", **fields)
    store.finish_run(run_id, metrics={"test": {"t": {"accuracy": 0.5}}}, cost={}, details={"shots": 0})
    assert store.get(run_id).details == {"shots": 0}
    other = store.start_run(name="q", tasks=["t"], seed=0, config={}, run_dir="r", **fields)
    assert store.get(other).details == {}


def test_an_openai_model_string_makes_the_generate_only_backend_without_connecting():
    pytest.importorskip("mtpeft.prompting.backends.openai_compat")
    from mtpeft.prompting.backends import PromptBackend, ScoringBackend, make_backend

    config = PromptConfig(model="openai:http://127.0.0.1:9/v1", model_name="m", tasks=TASKS, concurrency=2)
    backend = make_backend(config)
    assert isinstance(backend, PromptBackend) and not isinstance(backend, ScoringBackend)
    assert "127.0.0.1:9" in backend.name and config.model_label == "openai:m"
