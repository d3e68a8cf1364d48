"""`mtpeft serve EXPORT_DIR`: an export folder behind the HTTP API, answering as the PyTorch run does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SNIPPETS = ["def f(x):\n    return eval(x)", "int main() { return 0; }"]


@pytest.fixture
def client(lora_export: Path) -> Iterator:
    from fastapi.testclient import TestClient

    from mtpeft.serve.app import create_app
    from mtpeft.serve.loading import load_runs

    runs = load_runs([f"onnx={lora_export}"], device=None, batch_size=8)  # as `mtpeft serve` loads them
    with TestClient(create_app(runs), base_url="http://localhost") as test_client:
        yield test_client


def test_analyze_over_http_gives_the_pytorch_runs_labels(client, lora_pair):
    reference, _ = lora_pair
    pairs = [{"a": SNIPPETS[0], "b": SNIPPETS[1]}]
    reply = client.post("/v1/analyze", json={"snippets": SNIPPETS, "pairs": pairs, "precision": 0.5})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    want = reference.analyze(SNIPPETS)
    assert [{t: a["label"] for t, a in got.items()} for got in body["snippets"]] == [
        {t: a["label"] for t, a in w.items()} for w in want
    ]
    assert body["pairs"][0]["clone"]["label"] == reference.compare(SNIPPETS[0], SNIPPETS[1])["label"]
    assert "flagged" in body["snippets"][0]["vulnerability"]  # thresholds from the copied calibration


def test_tasks_and_metrics_describe_the_exported_run(client):
    (run,) = client.get("/v1/tasks").json()["runs"]
    assert run["name"] == "onnx" and run["method"] == "lora (merged into the weights; ONNX fp32)"
    assert {t["name"]: t["metrics"] for t in run["tasks"]}["complexity"] == ["accuracy", "macro_f1"]
    client.post("/v1/embed", json={"snippets": SNIPPETS})
    metrics = client.get("/metrics").text
    assert 'mtpeft_backbone_rows_total{run="onnx"} 2.0' in metrics  # one graph run of the two snippets
