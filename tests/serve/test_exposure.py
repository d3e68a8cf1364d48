"""What the server shows, and to whom (issue 24, items 5 and 6, and request bodies): only loopback Host
names are answered by default (DNS rebinding), no response holds an absolute server path, the schema is
behind the API key and no page loads anything from another host, and hostile JSON bodies are one 4xx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

CODE = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def indexed(served_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A search index over a tiny source folder, and the folder's absolute parent (must never be shown)."""
    from mtpeft.index import build_index
    from mtpeft.serve.loading import load_indexes

    root = tmp_path_factory.mktemp("exposed")
    source = root / "src"
    source.mkdir()
    (source / "maths.py").write_text(CODE + "\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n")
    build_index(served_run, source, root / "index", progress=False)
    return load_indexes([f"code={root / 'index'}"], {"tiny": served_run}), root


def _client(served_run, indexes=None, **options):
    from fastapi.testclient import TestClient

    from mtpeft.serve.app import create_app

    return TestClient(create_app({"tiny": served_run}, indexes, **options), base_url="http://localhost")


@pytest.fixture
def open_server(served_run, indexed) -> Iterator:
    with _client(served_run, indexed[0]) as client:
        yield client


# ---- Host ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:8000", "localhost.attacker.example", "127.0.0.1.nip.io", "[::2]"],
)
def test_a_foreign_host_is_refused_without_a_key(open_server, host: str) -> None:
    for reply in (
        open_server.get("/v1/tasks", headers={"Host": host}),
        open_server.post("/v1/search", json={"query": "add numbers"}, headers={"Host": host}),
        open_server.get("/", headers={"Host": host}),
    ):
        assert reply.status_code == 400
        detail = reply.json()["detail"]
        assert "--allowed-hosts" in detail and "\n" not in detail
        assert "maths.py" not in reply.text and "mean" not in reply.text


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:54321", "[::1]:8000", "LOCALHOST"]
)
def test_loopback_names_with_any_port_are_answered(open_server, host: str) -> None:
    assert open_server.get("/v1/tasks", headers={"Host": host}).status_code == 200


def test_allowed_hosts_and_the_bind_host_widen_the_check(served_run) -> None:
    from mtpeft.serve.settings import allowed_hosts

    hosts = allowed_hosts("10.1.2.3", ["*.corp.example", "::1"])
    with _client(served_run, allowed_hosts=hosts) as client:
        for host, status in [
            ("10.1.2.3:8000", 200),
            ("api.corp.example", 200),
            ("corp.example.attacker.example", 400),
            ("10.1.2.4", 400),
        ]:
            assert client.get("/healthz", headers={"Host": host}).status_code == status, host
    assert allowed_hosts("0.0.0.0") == ["localhost", "127.0.0.1", "[::1]"]  # no name to add
    with pytest.raises(ValueError, match="not a host name"):
        allowed_hosts("127.0.0.1", ["example.com:80"])


# ---- no absolute server paths ---------------------------------------------------------------------------
def test_no_response_holds_an_absolute_server_path(open_server, indexed, served_run_dir: Path) -> None:
    _, root = indexed
    replies = [
        open_server.get(path)
        for path in ("/v1/tasks", "/healthz", "/v1/models", "/openapi.json", "/metrics", "/")
    ]
    replies.append(open_server.post("/v1/search", json={"query": "add two numbers", "k": 2}))
    replies.append(open_server.post("/v1/search", json={"query": "x", "index": "nope"}))
    replies.append(open_server.post("/v1/analyze", json={"snippets": [CODE], "run": "nope"}))
    for reply in replies:
        assert reply.status_code in (200, 404), reply.text
        for secret in (str(served_run_dir), str(root), str(Path.home())):
            assert secret not in reply.text, f"{reply.url} shows {secret}"
    tasks = open_server.get("/v1/tasks").json()
    assert tasks["indexes"][0]["root"] == "src"  # what the user indexed, by its name
    hits = open_server.post("/v1/search", json={"query": "mean of a list"}).json()["results"][0]
    assert {hit["path"] for hit in hits} == {"maths.py"}


# ---- docs and schema ---------------------------------------------------------------------------------
def test_the_schema_needs_the_key_and_the_docs_pages_are_gone(served_run) -> None:
    with _client(served_run, api_key="s3cret") as keyed:
        assert keyed.get("/openapi.json").status_code == 401
        assert keyed.get("/openapi.json", headers={"X-API-Key": "wrong"}).status_code == 401
        schema = keyed.get("/openapi.json", headers={"X-API-Key": "s3cret"})
        assert schema.status_code == 200 and "/v1/analyze" in schema.json()["paths"]
        assert keyed.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert keyed.get(page, headers={"X-API-Key": "s3cret"}).status_code in (401, 404)
            assert keyed.get(page).status_code in (401, 404)
    with _client(served_run) as open_client:  # no key: the schema is open, as every /v1 path is
        assert open_client.get("/openapi.json").status_code == 200
        assert open_client.get("/docs").status_code == 404


_EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def test_no_html_page_loads_anything_from_another_host(open_server) -> None:
    """Every GET route without parameters that answers HTML: no src/href to another host."""
    pages = 0
    for route in open_server.app.routes:
        if "GET" not in getattr(route, "methods", ()) or "{" in route.path:
            continue
        reply = open_server.get(route.path)
        if reply.headers.get("content-type", "").startswith("text/html"):
            pages += 1
            assert not _EXTERNAL.search(reply.text), f"{route.path} loads from another host"
            assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert pages >= 1  # the page itself was checked


# ---- request bodies parsed like data files ------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"snippets": ["def f(): pass"], "snippets": ["x = 1"]}', "appears twice"),
        ('{"snippets": ["def f(): pass"], "tasks": null, "tasks": []}', "appears twice"),
        ('{"snippets": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested more than"),
        ('{"snippets": ["def f(): pass"], "run": ' + "9" * 5000 + "}", "digits"),
        ('{"snippets": [', "not valid JSON"),
        (b'{"snippets": ["\xff"]}', "not UTF-8"),
    ],
)
def test_hostile_json_bodies_are_one_422(served_run, body, words: str) -> None:
    with _client(served_run, limits=_big_bodies()) as client:
        reply = client.post("/v1/analyze", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert words in detail and "\n" not in detail and len(detail) < 300


def test_openai_endpoint_refuses_duplicate_keys_in_its_own_shape(served_run) -> None:
    body = '{"model": "m", "model": "n", "messages": [{"role": "user", "content": "x = 1"}]}'
    with _client(served_run) as client:
        reply = client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert reply.status_code == 400
    assert "appears twice" in reply.json()["error"]["message"]


def _big_bodies():
    from mtpeft.serve.settings import Limits

    return Limits(max_body_bytes=1_000_000)
