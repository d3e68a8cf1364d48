"""The deployable `best/`: runs saved by this version and by the one before reload, or say what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.errors import ConfigError
from mtpeft.manifest import MANIFEST_FILE, write_manifest
from mtpeft.modeling.build import HEADS_FORMAT_VERSION, build_model, load_trained, save_deployable
from mtpeft.modeling.inputs import pad
from mtpeft.tasks import get_task

SNIPPETS = ["int f(char *s) { return strlen(s); }", "void g() { free(p); free(p); }"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A run directory as training writes it, and what its model predicts for SNIPPETS."""
    run_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="tiny-bert", tasks=[{"task": "vulnerability"}, {"task": "clone"}])
    torch.manual_seed(0)
    tasks = {entry.task: get_task(entry.task) for entry in config.tasks}
    built = build_model(config, tasks)
    with torch.no_grad():  # heads away from their initialisation, so reloading them is visible
        for p in built.model.heads.parameters():
            p.add_(torch.randn_like(p))
    save_deployable(built.model, run_dir / layout.BEST_DIR, step=3, score=0.5)
    (run_dir / layout.CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return run_dir, _predict(built.model.eval(), built.backbone)


def _predict(model, backbone) -> dict[str, torch.Tensor]:
    tokens = pad(backbone.tokenizer(SNIPPETS)["input_ids"], backbone.tokenizer.pad_token_id)
    u = model.encode(**tokens)
    return model.analyze(**tokens) | {"clone": model.compare(u, u.flip(0), "clone")}


def _heads_meta(run_dir: Path) -> Path:
    return run_dir / layout.BEST_DIR / layout.HEADS_META


def test_saved_run_records_its_format_and_reloads_with_the_same_predictions(saved):
    run_dir, expected = saved
    meta = json.loads(_heads_meta(run_dir).read_text())
    assert meta["format_version"] == HEADS_FORMAT_VERSION
    assert meta["heads"]["clone"]["inputs"] == ["code", "code_b"]
    model, backbone, config = load_trained(run_dir)
    assert config.model == "tiny-bert"
    for task, probs in _predict(model, backbone).items():
        assert torch.allclose(probs, expected[task], atol=1e-6), task


def test_run_saved_before_heads_json_had_a_version_still_loads(saved, tmp_path, capsys):
    run_dir, expected = saved
    old = _copy_run(run_dir, tmp_path / "old-run")
    meta = json.loads(_heads_meta(old).read_text())
    # best/ exactly as the version before this one wrote it: no format_version, no per-head inputs, and
    # no checksum manifest (it loads unverified, with a warning).
    _heads_meta(old).write_text(json.dumps({k: meta[k] for k in ("step", "score", "pooling", "tasks")}))
    (old / layout.BEST_DIR / MANIFEST_FILE).unlink()
    model, backbone, _ = load_trained(old)
    assert "before checksums; loading it unverified" in capsys.readouterr().err
    for task, probs in _predict(model, backbone).items():
        assert torch.allclose(probs, expected[task], atol=1e-6), task


def test_run_from_a_newer_format_fails_with_one_clear_message(saved, tmp_path):
    run = _copy_run(saved[0], tmp_path / "future")
    meta = json.loads(_heads_meta(run).read_text()) | {"format_version": HEADS_FORMAT_VERSION + 1}
    _heads_meta(run).write_text(json.dumps(meta))
    write_manifest(run / layout.BEST_DIR)  # a consistent best/, as that other version would write it
    with pytest.raises(ConfigError, match="newer mtpeft.*upgrade"):
        load_trained(run)


def test_heads_that_no_longer_match_name_the_tensors_that_changed(saved, tmp_path):
    run = _copy_run(saved[0], tmp_path / "renamed")
    weights = run / layout.BEST_DIR / layout.HEADS_WEIGHTS
    tensors = load_file(str(weights))
    tensors["clone.classifier.weight"] = tensors.pop("clone.mlp.4.weight")
    save_file(tensors, str(weights))
    write_manifest(run / layout.BEST_DIR)
    with pytest.raises(ConfigError, match=r"missing: clone\.mlp\.4\.weight; not expected: clone\.classifier"):
        load_trained(run)


def test_head_trained_on_other_inputs_is_refused(saved, tmp_path):
    run = _copy_run(saved[0], tmp_path / "swapped")
    meta = json.loads(_heads_meta(run).read_text())
    meta["heads"]["clone"]["inputs"] = ["code_b", "code"]
    _heads_meta(run).write_text(json.dumps(meta))
    write_manifest(run / layout.BEST_DIR)
    with pytest.raises(ConfigError, match="head 'clone' was trained on inputs"):
        load_trained(run)


def _copy_run(run_dir: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, target)
    return target
