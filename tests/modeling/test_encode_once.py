"""One encode, many heads: every input of a batch costs one backbone pass, whatever the task count."""

from __future__ import annotations

import pytest
import torch

from mtpeft.config import TrainConfig
from mtpeft.modeling.build import build_model
from mtpeft.modeling.inputs import pad
from mtpeft.modeling.model import MultiTaskModel
from mtpeft.tasks.spec import TaskKind, TaskSpec

SNIPPETS = ["def add(a, b):\n    return a + b", "x = [i for i in range(10)]", "while True:\n    pass"]
QUERIES = ["add two numbers", "list of ten numbers", "loop forever"]


def _spec(name: str, kind: str, labels: list[str] | None = None) -> TaskSpec:
    metrics = ["mrr"] if kind == TaskKind.RETRIEVAL else ["accuracy"]
    return TaskSpec(name=name, kind=kind, format="jsonl", labels=labels, metrics=metrics)


TASKS = {
    "vulnerability": _spec("vulnerability", TaskKind.BINARY, ["0", "1"]),
    "flaky": _spec("flaky", TaskKind.BINARY, ["0", "1"]),
    "complexity": _spec("complexity", TaskKind.MULTICLASS, ["1", "n", "n^2"]),
    "clone": _spec("clone", TaskKind.PAIR, ["0", "1"]),
    "search": _spec("search", TaskKind.RETRIEVAL),
}


@pytest.fixture(scope="module")
def built():
    config = TrainConfig(model="tiny-bert", tasks=[{"task": "vulnerability"}], retrieval_dim=16)
    torch.manual_seed(0)
    built = build_model(config, TASKS)
    built.model.eval()
    return built


@pytest.fixture
def passes(built):
    """How many times the backbone ran since the test started."""
    calls: list[int] = []
    handle = built.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def _tokens(built, texts: list[str]) -> dict[str, torch.Tensor]:
    ids = built.backbone.tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    return pad(ids, built.backbone.tokenizer.pad_token_id)


def _batch(built, **inputs: list[str]) -> dict:
    return {"inputs": {role: _tokens(built, texts) for role, texts in inputs.items()}}


def test_analyze_runs_every_snippet_task_from_one_backbone_pass(built, passes):
    tokens = _tokens(built, SNIPPETS)
    probs = built.model.analyze(tokens["input_ids"], tokens["attention_mask"])
    assert len(passes) == 1
    assert set(probs) == {"vulnerability", "flaky", "complexity"}
    assert probs["complexity"].shape == (3, 3)
    assert torch.allclose(probs["flaky"].sum(-1), torch.ones(3))


def test_pair_and_retrieval_batches_cost_one_pass_per_side(built, passes):
    model: MultiTaskModel = built.model
    model.predict("clone", _batch(built, code=SNIPPETS, code_b=SNIPPETS[::-1]))
    assert len(passes) == 2
    model.train()
    try:
        batch = _batch(built, query=QUERIES, code=SNIPPETS)
        model.task_loss("search", batch).backward()
    finally:
        model.eval()
    assert len(passes) == 4


def test_analyze_gives_the_probabilities_of_each_task_predicted_alone(built):
    batch = _batch(built, code=SNIPPETS)
    tokens = batch["inputs"]["code"]
    together = built.model.analyze(tokens["input_ids"], tokens["attention_mask"])
    for task, probs in together.items():
        alone = built.model.predict(task, batch)["probs"]
        assert torch.allclose(probs, alone, atol=1e-6), task


def test_embed_and_compare_match_the_heads_evaluation_outputs(built):
    model = built.model
    queries, snippets = _tokens(built, QUERIES), _tokens(built, SNIPPETS)
    evaluated = model.predict("search", {"inputs": {"query": queries, "code": snippets}})
    assert torch.allclose(model.embed(**snippets), evaluated["code_emb"], atol=1e-6)
    assert torch.allclose(model.embed(**queries, task="search"), evaluated["query_emb"], atol=1e-6)

    others = _tokens(built, SNIPPETS[::-1])
    pair = model.predict("clone", {"inputs": {"code": snippets, "code_b": others}})["probs"]
    u, v = model.encode(**snippets), model.encode(**others)
    assert torch.allclose(model.compare(u, v), pair, atol=1e-6)
    one_against_all = model.compare(u[:1], v)  # one snippet against every candidate
    assert torch.allclose(one_against_all[0], pair[0], atol=1e-6) and one_against_all.shape == pair.shape


def test_inference_entries_name_the_tasks_they_can_use(built):
    tokens = _tokens(built, SNIPPETS)
    with pytest.raises(ValueError, match="not clone.*compare"):
        built.model.analyze(tokens["input_ids"], tokens["attention_mask"], tasks=["flaky", "clone"])
    with pytest.raises(ValueError, match="tasks it can use: search"):
        built.model.embed(tokens["input_ids"], tokens["attention_mask"], task="flaky")
