"""Item 10 of issue 24: config values the model cannot take are refused by the preflight, before a store
row or a run directory exists, naming the field and the allowed range. Before, `max_length` above the
position table failed at the first long batch, `retrieval_dim: 100000000` died allocating, and a NUL
in the workspace was a ValueError traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from mtpeft.config import load_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.errors import ConfigError
from mtpeft.models.limits import RETRIEVAL_DIM_FLOOR, position_limit
from mtpeft.training.preflight import preflight


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "vulnerability": write_fixture_dataset("devign-jsonl", root, n_per_split=8),
        "code-search": write_fixture_dataset("codesearchnet", root, n_per_split=8),
    }


def _config(tmp_path: Path, data: dict, task: str = "vulnerability", entry=None, **changes) -> Path:
    config = {
        "name": "limits",
        "model": "tiny-bert",
        "method": "lora",
        "tasks": [{"task": task, "data": str(data[task]), "batch_size": 4} | (entry or {})],
        "max_steps": 1,
        "workspace": str(tmp_path / "ws"),
        "baselines": False,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config | changes), encoding="utf-8")
    return path


def _refused(path: Path) -> ConfigError:
    """run_training as `mtpeft train` calls it: refused, with nothing written."""
    from mtpeft.training.run import run_training

    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        run_training(config, progress=False, source=path)
    workspace = config.workspace  # os.path.exists: False, not an error, for a path that cannot be
    assert not os.path.exists(os.path.join(workspace, "mtpeft.sqlite"))
    assert not os.path.exists(os.path.join(workspace, "runs"))
    return caught.value


def test_max_length_beyond_the_position_table_is_refused_before_the_run(tmp_path, data):
    error = _refused(_config(tmp_path, data, entry={"max_length": 600}))  # tiny-bert: 512 positions
    assert error.field == "tasks.0.max_length" and str(tmp_path / "train.yaml") in str(error)
    assert "600" in str(error) and "holds 512" in str(error)


def test_max_query_length_is_checked_too(tmp_path, data):
    error = _refused(_config(tmp_path, data, "code-search", entry={"max_query_length": 4096}))
    assert error.field == "tasks.0.max_query_length" and "holds 512" in str(error)


def test_max_length_at_the_limit_passes(tmp_path, data):
    path = _config(tmp_path, data, entry={"max_length": 512})
    preflight(load_config(path), source=path)


def test_a_model_with_rotary_positions_has_no_limit_to_refuse(tmp_path, data):
    """tiny-llama's max_position_embeddings (512) is a trained length, not a table: longer runs."""
    path = _config(tmp_path, data, entry={"max_length": 4000}, model="tiny-llama")
    preflight(load_config(path), source=path)


def test_an_instruct_row_counts_code_and_answer_together(tmp_path, data):
    from transformers import GPT2Config

    from mtpeft.config import TaskEntry
    from mtpeft.training.preflight import sequence_lengths

    gpt2 = GPT2Config(n_positions=300)
    entry = TaskEntry(task="vulnerability", formulation="instruct", max_length=296)
    [(field, tokens, _)] = sequence_lengths(entry, gpt2)
    assert field == "max_length" and tokens > position_limit(gpt2)


def test_retrieval_dim_of_a_hundred_million_is_refused_with_the_allowed_range(tmp_path, data):
    error = _refused(_config(tmp_path, data, "code-search", retrieval_dim=100_000_000))
    assert error.field == "retrieval_dim" and f"8 to {RETRIEVAL_DIM_FLOOR}" in str(error)


def test_retrieval_dim_at_the_bound_passes_and_one_more_is_refused(tmp_path, data):
    preflight(load_config(_config(tmp_path, data, "code-search", retrieval_dim=RETRIEVAL_DIM_FLOOR)))
    error = _refused(_config(tmp_path, data, "code-search", retrieval_dim=RETRIEVAL_DIM_FLOOR + 1))
    assert error.field == "retrieval_dim"


@pytest.mark.parametrize(
    "workspace", ["ws\0x", "a\0b/ws", "w" * 300], ids=["nul", "nul-in-a-parent", "name-too-long"]
)
def test_a_workspace_no_file_path_can_hold_is_refused(tmp_path, data, workspace):
    error = _refused(_config(tmp_path, data, workspace=str(tmp_path / workspace)))
    assert error.field == "workspace"


def test_the_cli_prints_one_line_and_exits_2(tmp_path, data, capsys, monkeypatch):
    from mtpeft.cli.main import main

    path = _config(tmp_path, data, entry={"max_length": 2000})
    monkeypatch.setattr(sys, "argv", ["mtpeft", "train", str(path), "--no-progress"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "tasks.0.max_length" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("model_type", "settings", "limit"),
    [
        ("bert", {"max_position_embeddings": 512}, 512),
        ("roberta", {"max_position_embeddings": 514, "pad_token_id": 1}, 512),  # offset past padding
        ("gpt2", {"n_positions": 1024}, 1024),
        ("t5", {}, None),  # relative positions
        ("llama", {"max_position_embeddings": 4096}, None),  # rotary
        ("deberta-v2", {"relative_attention": True, "position_biased_input": False}, None),  # v3
        ("bloom", {}, None),  # ALiBi
    ],
)
def test_position_limits_by_kind_of_position_encoding(model_type, settings, limit):
    from transformers import AutoConfig

    assert position_limit(AutoConfig.for_model(model_type, **settings)) == limit
