"""A run with tasks trained through the LM head, served: /v1/generate, instruct pair tasks in /v1/analyze,
and the OpenAI-compatible /v1/chat/completions used through the `openai` client against a real process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server_process import serving


@pytest.fixture
def gen_client(gen_run) -> Iterator:
    from fastapi.testclient import TestClient

    from mtpeft.serve.app import create_app
    from mtpeft.serve.settings import Limits

    app = create_app({"gen": gen_run}, limits=Limits(max_new_tokens=16))
    with TestClient(app, base_url="http://localhost") as client:
        yield client


REPAIR = (
    "public int METHOD_1 ( int VAR_1 , int VAR_2 ) { if ( VAR_1 < VAR_2 ) return VAR_1 - 3 ; return VAR_2 ; }"
)


def test_generate_answers_what_the_python_api_generates_with_token_counts(gen_client, gen_run) -> None:
    body = gen_client.post("/v1/generate", json={"snippets": [REPAIR, REPAIR[:60]], "task": "repair"}).json()
    assert body["texts"] == gen_run.generate([REPAIR, REPAIR[:60]], task="repair")
    assert body["usage"]["prompt_tokens"] == sum(gen_run.prompt_tokens([REPAIR, REPAIR[:60]], "repair"))
    short = gen_client.post(
        "/v1/generate", json={"snippets": [REPAIR], "task": "repair", "max_new_tokens": 2}
    )
    assert short.json()["texts"] == gen_run.generate([REPAIR], task="repair", max_new_tokens=2)
    refusals = {
        "needs the task": ({"snippets": [REPAIR]}, "give 'task'"),
        "a head task": ({"snippets": [REPAIR], "task": "vulnerability"}, "does not generate text"),
        "over the limit": (
            {"snippets": [REPAIR], "task": "repair", "max_new_tokens": 99},
            "--max-new-tokens",
        ),
    }
    for why, (payload, words) in refusals.items():
        reply = gen_client.post("/v1/generate", json=payload)
        assert reply.status_code == 422 and words in reply.json()["detail"], why


def test_an_instruct_pair_task_is_answered_by_analyze_and_listed_as_a_model(gen_client, gen_run) -> None:
    pairs = [{"a": REPAIR, "b": REPAIR}, {"a": REPAIR, "b": "int g() { return 0; }"}]
    body = gen_client.post("/v1/analyze", json={"snippets": [REPAIR], "pairs": pairs}).json()
    want = gen_run.compare([p["a"] for p in pairs], [p["b"] for p in pairs], task="clone")
    assert [p["clone"]["label"] for p in body["pairs"]] == [w["label"] for w in want]
    assert set(body["snippets"][0]) == {"vulnerability"}
    models = gen_client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["gen/clone", "gen/repair"]
    kinds = {t["name"]: t["endpoint"] for t in gen_client.get("/v1/tasks").json()["runs"][0]["tasks"]}
    assert kinds == {"vulnerability": "analyze", "clone": "analyze", "repair": "generate"}


@pytest.fixture(scope="module")
def gen_server(gen_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gen-serve-log") / "serve.log"
    command = [sys.executable, "-m", "mtpeft.cli.main", "serve", f"gen={gen_run_dir}", "--port", "0"]
    command += ["--device", "cpu", "--max-new-tokens", "16", "--batch-wait-ms", "20"]
    command += ["--max-wait-s", "600"]  # answers are checked here, not load: a busy 2-core box may queue long
    with serving(command, log) as url:
        yield url


def test_any_openai_client_gets_the_runs_generation(gen_server: str, gen_run) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{gen_server}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["gen/clone", "gen/repair"]
    reply = client.chat.completions.create(model="gen/repair", messages=[{"role": "user", "content": REPAIR}])
    expected = gen_run.generate(REPAIR, task="repair", max_new_tokens=16)
    assert reply.choices[0].message.content == expected and reply.model == "gen/repair"
    assert reply.usage.prompt_tokens == gen_run.prompt_tokens([REPAIR], "repair")[0]
    assert reply.choices[0].finish_reason in ("stop", "length")
    fenced = f"Please fix:\n```java\n{REPAIR}\n```\nthanks"  # the code block is the input, not the chat
    again = client.chat.completions.create(
        model="repair", messages=[{"role": "user", "content": fenced}], max_tokens=16, temperature=0
    )
    assert again.choices[0].message.content == expected
    with ThreadPoolExecutor(6) as pool:  # concurrent clients: gathered into shared generate batches
        answers = list(
            pool.map(
                lambda _: client.chat.completions.create(
                    model="gen/repair", messages=[{"role": "user", "content": REPAIR}]
                ),
                range(6),
            )
        )
    assert all(isinstance(a.choices[0].message.content, str) for a in answers)


def test_openai_clients_get_openai_shaped_refusals(gen_server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{gen_server}/v1", api_key="unused", max_retries=0)
    user = [{"role": "user", "content": REPAIR}]
    refusals = [
        ({"model": "gen/nope", "messages": user}, openai.NotFoundError, "gen/repair"),
        ({"model": "gen/repair", "messages": user, "temperature": 0.7}, openai.BadRequestError, "greedily"),
        (
            {"model": "gen/repair", "messages": user, "max_tokens": 99},
            openai.BadRequestError,
            "--max-new-tokens",
        ),
        (
            {"model": "gen/repair", "messages": [{"role": "system", "content": "Be brief."}, *user]},
            openai.BadRequestError,
            "one user message",
        ),
    ]
    for request, error, words in refusals:
        with pytest.raises(error) as caught:
            client.chat.completions.create(**request)
        assert words in caught.value.message, request
