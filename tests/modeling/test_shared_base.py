"""load_many: runs on one base model share ONE backbone, and each answers exactly as it does alone.

Two tiny LoRA runs trained on the same tiny-bert base (same seed, so the same random base weights; another
lr, so other adapters and heads) share one backbone. A LoRA run on another base (seed 1: other tiny-bert
weights) and a `full` run load on their own. Every run's analyze / compare / embed answers must equal those
of the same run loaded alone with mtpeft.load, also when calls alternate between runs: since the runs'
backbones give different vectors, that proves each call ran with its own adapter active.

The cheap runs (other base, `full`, the peft-family pairs) are built and saved without training, with their
modules and heads moved away from their initialisation so that a wrong adapter or head would show.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import mtpeft
from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.errors import ConfigError, InputError
from mtpeft.modeling.build import build_model, read_saved, save_deployable
from mtpeft.modeling.inputs import pad
from mtpeft.modeling.shared_base import SharedBase
from mtpeft.tasks import get_task
from tiny_run import train_tiny_run

SNIPPETS = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def g(xs):\n    return sorted(set(xs))",
    "void h() { free(p); free(p); }",
]
QUERIES = ["sort a list", "copy a string into a buffer"]
CPU = torch.device("cpu")
SHORT = {"max_steps": 8, "eval_every": 8, "save_every": 8}  # a third of the usual steps keeps this file quick


def _saved_run(root: Path, method: str, options: dict[str, Any] | None = None, *, seed: int = 0) -> Path:
    """A run directory as training writes it (binary + pair task), without training: modules and heads
    perturbed by a generator that differs per folder, so two runs never hold the same weights."""
    config = TrainConfig(
        model="tiny-bert",
        method=method,
        method_options=options or {},
        seed=seed,
        tasks=[{"task": "vulnerability"}, {"task": "clone"}],
    )
    built = build_model(config, {entry.task: get_task(entry.task) for entry in config.tasks})
    noise = torch.Generator().manual_seed(zlib.crc32(root.name.encode()))
    with torch.no_grad():
        for parameter in built.model.parameters():
            if parameter.requires_grad:  # the trained module (for `full`, every weight) and the heads
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=noise))
    save_deployable(built.model, root / layout.BEST_DIR, step=1, score=0.5)
    (root / layout.CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    train = train_tiny_run
    return {
        "a": train(tmp_path_factory.mktemp("shared-a"), seed=0, name="a", overrides=SHORT),
        # The same seed (so the same tiny-bert weights), another lr: another adapter and heads on that base.
        "b": train(tmp_path_factory.mktemp("shared-b"), seed=0, name="b", overrides={**SHORT, "lr": 2e-3}),
        "other-base": _saved_run(tmp_path_factory.mktemp("other-base"), "lora", seed=1),
        "full": _saved_run(tmp_path_factory.mktemp("full"), "full"),
    }


@pytest.fixture(scope="module")
def many(dirs: dict[str, Path]) -> dict[str, mtpeft.Run]:
    # Interleaved on purpose: grouping does not depend on the runs being next to each other.
    order = ["a", "other-base", "full", "b"]
    runs = mtpeft.load_many([dirs[name] for name in order], device="cpu", batch_size=2)
    return dict(zip(order, runs, strict=True))


@pytest.fixture(scope="module")
def alone(dirs: dict[str, Path]) -> dict[str, mtpeft.Run]:
    return {name: mtpeft.load(path, device="cpu", batch_size=2) for name, path in dirs.items()}


# ---- helpers ---------------------------------------------------------------------------------------------
def _base_weight(run: mtpeft.Run) -> torch.Tensor:
    return next(p for n, p in run.model.named_parameters() if n.endswith("word_embeddings.weight"))


def _answers(run: mtpeft.Run) -> dict[str, Any]:
    """Every kind of answer the run gives: analyze, compare (each pair task), embed (code, and queries)."""
    answers: dict[str, Any] = {"analyze": run.analyze(SNIPPETS), "embed": run.embed(SNIPPETS)}
    for task in run.pair_tasks:
        answers[f"compare {task}"] = run.compare(SNIPPETS[0], SNIPPETS, task=task)
    if run.retrieval_tasks:
        answers["embed queries"] = run.embed(QUERIES, query=True)
    return answers


def _assert_same(got: Any, want: Any, where: str = "") -> None:
    """Same labels, probabilities and vectors within 1e-5."""
    if isinstance(want, np.ndarray):
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=where)
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            _assert_same(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


def _pooled(run: mtpeft.Run) -> torch.Tensor:
    """The backbone's pooled vectors alone (no head): what differs between two adapters on one base."""
    tokens = pad(run.tokenizer(SNIPPETS)["input_ids"], run.tokenizer.pad_token_id)
    with torch.inference_mode():
        return run.model.encode(tokens["input_ids"], tokens["attention_mask"])


# ---- two runs on one base -----------------------------------------------------------------------------
def test_runs_on_one_base_share_one_backbone_and_keep_their_own_heads(many):
    a, b = many["a"], many["b"]
    assert _base_weight(a) is _base_weight(b)
    assert _base_weight(a).data_ptr() == _base_weight(b).data_ptr()
    head_a, head_b = (next(run.model.heads.parameters()) for run in (a, b))
    assert head_a.data_ptr() != head_b.data_ptr()
    assert a.tokenizer is b.tokenizer
    # Frozen: activating an adapter must not make it trainable again (peft's set_adapter default would).
    a.analyze(SNIPPETS[0])
    b.analyze(SNIPPETS[0])
    assert not any(p.requires_grad for p in a.model.backbone.parameters())


def test_the_second_run_adds_only_its_adapter_and_heads(many, alone):
    a, b = many["a"].memory, many["b"].memory
    assert a["shared_backbone_with"] is None
    assert b["shared_backbone_with"] == many["a"].run_dir.name
    assert 0 < b["parameter_bytes_added"] < 0.1 * a["parameter_bytes_added"]
    # The first run of a group loads as load() does: the same parameters.
    assert a["parameter_bytes_added"] == alone["a"].memory["parameter_bytes_added"]
    assert alone["a"].memory["shared_backbone_with"] is None
    for memory in (a, b, alone["a"].memory):
        assert isinstance(memory["rss_bytes_added"], int) and memory["rss_bytes_added"] >= 0


def test_each_run_answers_as_loaded_alone_even_when_calls_alternate(many, alone):
    # The two adapters really differ, so matching answers below mean each call used its own adapter.
    assert not torch.allclose(_pooled(many["a"]), _pooled(many["b"]), atol=1e-3)
    expected = {name: _answers(run) for name, run in alone.items()}
    for name in ["a", "b", "b", "a", "other-base", "a", "full", "b", "a"]:
        _assert_same(_answers(many[name]), expected[name], name)


# ---- runs that cannot share ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["other-base", "full"])
def test_a_run_on_another_base_or_full_loads_on_its_own_backbone(many, alone, name):
    run = many[name]
    assert run.memory["shared_backbone_with"] is None
    others = [_base_weight(many[n]).data_ptr() for n in many if n != name]
    assert _base_weight(run).data_ptr() not in others
    assert run.memory["parameter_bytes_added"] >= run.model_info.num_parameters * 4  # the whole fp32 model
    _assert_same(_answers(run), _answers(alone[name]), name)


# ---- which peft methods can share (peft 0.21) -----------------------------------------------------------
SHARING = {
    "lora + dora": (("lora", {}), ("dora", {})),
    "lora + lora of other rank and targets": (("lora", {}), ("lora", {"r": 4, "target_modules": ["key"]})),
    "ia3 + ia3": (("ia3", {}), ("ia3", {})),
    "prefix + prefix": (("prefix", {}), ("prefix", {"num_virtual_tokens": 5})),
    "prompt + prompt": (("prompt", {}), ("prompt", {"num_virtual_tokens": 5})),
    "adapter + adapter": (("adapter", {}), ("adapter", {"placement": "pfeiffer"})),
    "parallel + parallel": (("parallel-adapter", {}), ("parallel-adapter", {"bottleneck": 16})),
}
APART = {
    "lora + ia3": (("lora", {}), ("ia3", {})),
    "prefix + prompt": (("prefix", {}), ("prompt", {})),
    "parallel + serial adapter": (("parallel-adapter", {}), ("adapter", {})),
    "serial + parallel adapter": (("adapter", {}), ("parallel-adapter", {})),
}


@pytest.mark.parametrize(
    ("pair", "shares"),
    [*((p, True) for p in SHARING.values()), *((p, False) for p in APART.values())],
    ids=[*SHARING, *APART],
)
def test_peft_methods_share_a_backbone_only_where_peft_runs_them_right(tmp_path, pair, shares):
    paths = [_saved_run(tmp_path / f"run{i}", method, options) for i, (method, options) in enumerate(pair)]
    runs = mtpeft.load_many(paths, device="cpu")
    assert (_base_weight(runs[0]) is _base_weight(runs[1])) is shares
    for path, run in reversed(list(zip(paths, runs, strict=True))):  # the added adapter first, then default
        alone = mtpeft.load(path, device="cpu")
        with run.reusing_encodings(), alone.reusing_encodings():  # one encode per run here: keeps this quick
            _assert_same(_answers(run), _answers(alone), path.name)


@pytest.mark.parametrize(
    ("first", "second", "problem"),
    [
        (APART["lora + ia3"][0], APART["lora + ia3"][1], "Cannot combine adapters with different peft types"),
        # Same peft type, but the parallel wrapper moves the module the serial adapter targets.
        (("parallel-adapter", {}), ("adapter", {}), "weights did not fit"),
    ],
)
def test_forcing_an_unsupported_pair_onto_one_backbone_is_refused(tmp_path, first, second, problem):
    base = SharedBase(read_saved(_saved_run(tmp_path / "first", *first)), CPU)
    second_dir = _saved_run(tmp_path / "second", *second)
    with pytest.raises(ConfigError, match=problem) as refused:
        base.add(read_saved(second_dir), CPU)
    assert str(second_dir) in str(refused.value) and "first" in str(refused.value)


# ---- inputs -------------------------------------------------------------------------------------------
def test_one_directory_given_twice_is_loaded_once(tmp_path):
    path = _saved_run(tmp_path / "lora", "lora")
    first, again = mtpeft.load_many([path, str(path)], device="cpu")
    assert first is again


@pytest.mark.parametrize(
    ("run_dirs", "error", "message"),
    [
        ([], InputError, "at least one run directory"),
        ("workspace/runs/x", InputError, "a list of run directories"),
        (["no/such/run"], ConfigError, "no such run directory"),
    ],
)
def test_bad_arguments_say_what_to_pass(run_dirs, error, message):
    with pytest.raises(error, match=message):
        mtpeft.load_many(run_dirs, device="cpu")
