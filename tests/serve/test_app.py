"""The HTTP API in process (FastAPI's TestClient): answers equal to the Python API, and every refusal
is a 4xx that names the field or limit."""

from __future__ import annotations

import pytest

CODE = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def add(a, b):\n    return a + b\n",
    "public int size() { return items.length; }",
]


def _close(a: dict, b: dict) -> None:
    assert a["label"] == b["label"]
    for label, p in a["probabilities"].items():
        assert p == pytest.approx(b["probabilities"][label], abs=1e-5)


def test_analyze_answers_every_snippet_task_like_the_python_api(client, served_run) -> None:
    reply = client.post("/v1/analyze", json={"snippets": CODE})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["run"] == "tiny"
    expected = served_run.analyze(CODE)
    assert [set(a) for a in body["snippets"]] == [set(served_run.snippet_tasks)] * len(CODE)
    for got, want in zip(body["snippets"], expected, strict=True):
        for task in want:
            _close(got[task], want[task])


def test_pairs_are_answered_by_the_pair_task(client, served_run) -> None:
    pairs = [{"a": CODE[0], "b": CODE[1]}, {"a": CODE[2], "b": CODE[2]}]
    body = client.post("/v1/analyze", json={"pairs": pairs}).json()
    (task,) = served_run.pair_tasks
    want = served_run.compare([p["a"] for p in pairs], [p["b"] for p in pairs], task=task)
    for got, expected in zip(body["pairs"], want, strict=True):
        _close(got[task], expected)


def test_tasks_subset_and_embed(client, served_run) -> None:
    first = served_run.snippet_tasks[0]
    body = client.post("/v1/analyze", json={"snippets": CODE[:1], "tasks": [first]}).json()
    assert list(body["snippets"][0]) == [first]
    vectors = client.post("/v1/embed", json={"snippets": CODE}).json()
    assert vectors["dim"] == served_run.embed(CODE).shape[1]
    assert vectors["vectors"][1] == pytest.approx(served_run.embed(CODE)[1].tolist(), abs=1e-5)


def test_tasks_lists_kinds_labels_metrics_and_limits(client, served_run) -> None:
    body = client.get("/v1/tasks").json()
    (run,) = body["runs"]
    assert run["name"] == "tiny" and run["default"]
    kinds = {t["name"]: t["kind"] for t in run["tasks"]}
    assert kinds == {t.name: t.kind for t in served_run.tasks.values()}
    assert all(t["metrics"] for t in run["tasks"])
    assert body["limits"]["max_snippets"] == 8


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"snippets": ["x"] * 9}, 413, "--max-snippets"),
        ({"snippets": ["x" * 2001]}, 413, "--max-chars"),
        ({"snippets": ["ok", 3]}, 422, "snippets[1]"),
        ({"snipets": ["x"]}, 422, "unknown field"),
        ({"snippets": ["x"], "tasks": ["nope"]}, 422, "'nope' is not a task"),
        ({"snippets": ["x"], "run": "other"}, 404, "no run named 'other'"),
        ({}, 422, "give 'snippets'"),
        ({"snippets": ["   "]}, 422, "snippets[0] is empty"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(client, payload, status, words) -> None:
    reply = client.post("/v1/analyze", json=payload)
    assert reply.status_code == status
    assert words in reply.json()["detail"]


def test_oversized_and_malformed_bodies(client) -> None:
    big = client.post(
        "/v1/analyze", content=b"{" + b" " * 60_000 + b"}", headers={"content-type": "application/json"}
    )
    assert big.status_code == 413 and "--max-body-bytes" in big.json()["detail"]
    broken = client.post(
        "/v1/analyze", content=b'{"snippets": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]


def test_search_without_an_index_is_a_clear_404(client) -> None:
    reply = client.post("/v1/search", json={"query": "add two numbers"})
    assert reply.status_code == 404 and "--index" in reply.json()["detail"]


def test_metrics_count_requests_and_backbone_passes(client) -> None:
    client.post("/v1/analyze", json={"snippets": CODE})
    text = client.get("/metrics").text
    assert 'mtpeft_requests_total{endpoint="/v1/analyze",status="200"}' in text
    assert "mtpeft_backbone_passes_total" in text and "mtpeft_batch_snippets_bucket" in text


def test_api_key_is_required_when_set(served_run) -> None:
    from fastapi.testclient import TestClient

    from mtpeft.serve.app import create_app

    with TestClient(create_app({"tiny": served_run}, api_key="s3cret"), base_url="http://localhost") as keyed:
        assert keyed.get("/healthz").status_code == 200
        assert keyed.get("/v1/tasks").status_code == 401
        assert keyed.get("/v1/tasks", headers={"X-API-Key": "wrong"}).status_code == 401
        assert keyed.get("/v1/tasks", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert keyed.get("/v1/tasks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
