"""OpenAIBackend against real servers on loopback: `mtpeft lm-serve tiny-llama`, and a scripted upstream
that fails on cue (429 with Retry-After, 503, 500, 400, slow replies) to test retries, errors, order and
the concurrency bound."""

from __future__ import annotations

import re
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mtpeft.prompting.backends.base import Prompt, PromptBackend
from mtpeft.prompting.backends.openai_compat import (
    OpenAIBackend,
    RetryPolicy,
    estimate_prompt_tokens,
    normalize_base_url,
    retry_after_seconds,
)
from server_process import READY, serving, start_server

CODE = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def add(a, b):\n    return a + b\n",
    "public int size() { return items.length; }",
    "void g() { free(p); free(p); }",
    "x = [y * 2 for y in range(10) if y % 3]",
]


def ask(text: str, system: str | None = None) -> Prompt:
    prompt: Prompt = [{"role": "system", "content": system}] if system else []
    return [*prompt, {"role": "user", "content": text}]


# ---- processes ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mtpeft lm-serve tiny-llama --port 0` as a real process; yields its base URL."""
    log = tmp_path_factory.mktemp("lm-serve") / "lm-serve.log"
    command = [sys.executable, "-m", "mtpeft.cli.main", "lm-serve", "tiny-llama", "--port", "0"]
    with serving(command + ["--device", "cpu", "--max-new-tokens-cap", "16"], log, READY) as url:
        yield url


# The upstream: OpenAI-shaped replies chosen by the last user message, and GET /hits to read its counts.
UPSTREAM = textwrap.dedent(
    """
    import json, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits, lock, state = {}, threading.Lock(), {"now": 0, "peak": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            with lock:
                self.send(200, {"hits": hits, "peak": state["peak"]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][-1]["content"]
            with lock:
                hits[text] = count = hits.get(text, 0) + 1
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            try:
                self.reply(text, count, body)
            finally:
                with lock:
                    state["now"] -= 1

        def reply(self, text, count, body):
            fail = lambda message: {"error": {"message": message, "type": "server_error"}}
            if text == "flaky" and count == 1:
                return self.send(429, fail("slow down"), [("Retry-After", "0")])
            if text == "flaky" and count == 2:
                return self.send(503, fail("warming up"))
            if text == "broken":
                return self.send(500, fail("upstream exploded"))
            if text == "bad":
                return self.send(400, fail("messages[0]: not allowed"))
            if text.startswith("slow"):
                time.sleep(0.15)
            usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
            reply = {
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "echo: " + text}}],
            }
            if text != "no usage":
                reply["usage"] = usage
            self.send(200, reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"upstream on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    """
)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "upstream.py"
    script.write_text(UPSTREAM, encoding="utf-8")
    process, url = start_server(
        [sys.executable, "-u", str(script)], tmp_path / "up.log", re.compile(r"on (http://\S+)")
    )
    yield url
    process.kill()
    process.wait()


def _hits(url: str) -> dict:
    return httpx.get(url, timeout=10).json()


# ---- through mtpeft lm-serve -------------------------------------------------------------------------------
def test_concurrent_prompts_through_lm_serve_match_local_greedy_generation(lm_server: str) -> None:
    prompts = [ask(code, system="Answer yes or no.") for code in CODE]
    with OpenAIBackend(lm_server, concurrency=4, backoff_s=0.01) as backend:
        assert isinstance(backend, PromptBackend)
        assert backend.model == "tiny-llama"  # asked of /v1/models: the URL named no model
        answers = backend.generate(prompts, max_new_tokens=6)
    assert [a.error for a in answers] == [None] * len(prompts)
    for answer in answers:
        assert answer.tokens_out == 6 and answer.tokens_in > 5  # the server's usage, not an estimate
        assert "tokens_estimated" not in answer.extra and answer.extra["tries"] == 1
    assert [a.text for a in answers] == _local_greedy(prompts, max_new_tokens=6)


def _local_greedy(prompts: list[Prompt], max_new_tokens: int) -> list[str]:
    """The same model run in this process by the local backend, one prompt at a time (no padding)."""
    from mtpeft.prompting.backends.local import LocalBackend

    local = LocalBackend("tiny-llama", batch_size=1, device="cpu")
    return [a.text for a in local.generate(prompts, max_new_tokens=max_new_tokens)]


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"temperature": 0.7}, 400, "temperature"),
        ({"max_tokens": 17}, 400, "max_tokens"),
        ({"stream": True}, 400, "stream"),
        ({"n": 2}, 400, "n"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
        ({"top_k": 5}, 400, "top_k"),
        ({"model": "gpt-4"}, 404, "model"),
    ],
)
def test_lm_serve_refuses_what_it_does_not_do_with_openai_errors(
    lm_server: str, change: dict, status: int, param: str
) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2} | change
    reply = httpx.post(f"{lm_server}/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] and error["message"]


def test_lm_serve_lists_its_model_and_answers_a_plain_request(lm_server: str) -> None:
    (card,) = httpx.get(f"{lm_server}/v1/models", timeout=10).json()["data"]
    assert card["id"] == "tiny-llama" and card["context_length"] == 512
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
    reply = httpx.post(f"{lm_server}/v1/chat/completions", json=body, timeout=30).json()
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert reply["usage"]["completion_tokens"] <= 3 and reply["usage"]["prompt_tokens"] > 0
    long = {"messages": [{"role": "user", "content": "word " * 600}], "max_tokens": 3}
    too_long = httpx.post(f"{lm_server}/v1/chat/completions", json=long, timeout=30)
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"


# ---- failures, retries, order and the bound ----------------------------------------------------------------
def test_retries_then_answers_and_failures_become_answers_in_order(upstream: str) -> None:
    texts = ["flaky", "broken", "fine", "bad", "no usage"]
    with OpenAIBackend(upstream, "m", max_retries=3, backoff_s=0.001, concurrency=3) as backend:
        answers = backend.generate([ask(t) for t in texts], max_new_tokens=4)
    hits = _hits(upstream)["hits"]
    flaky, broken, fine, bad, no_usage = answers
    assert (flaky.text, flaky.extra["tries"], hits["flaky"]) == ("echo: flaky", 3, 3)  # 429, 503, then 200
    assert (flaky.tokens_in, flaky.tokens_out) == (7, 3)
    assert broken.text is None and broken.extra["tries"] == 4 and hits["broken"] == 4  # 1 + max_retries
    assert broken.error == "HTTP 500: upstream exploded after 4 tries"
    assert fine.text == "echo: fine" and fine.error is None
    assert bad.error == "HTTP 400: messages[0]: not allowed after 1 try" and hits["bad"] == 1  # not retried
    assert no_usage.text == "echo: no usage" and no_usage.extra["tokens_estimated"] is True
    assert no_usage.tokens_in == estimate_prompt_tokens(ask("no usage")) and no_usage.tokens_out == 4


def test_requests_in_flight_stay_within_the_concurrency_bound(upstream: str) -> None:
    texts = [f"slow {i}" for i in range(9)]
    with OpenAIBackend(upstream, "m", concurrency=3) as backend:
        answers = backend.generate([ask(t) for t in texts], max_new_tokens=4)
    assert [a.text for a in answers] == [f"echo: {t}" for t in texts]
    assert 2 <= _hits(upstream)["peak"] <= 3


def test_an_unreachable_server_is_an_error_answer_after_its_retries() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with OpenAIBackend(f"http://127.0.0.1:{port}", "m", max_retries=2, backoff_s=0.001) as backend:
        (answer,) = backend.generate([ask("hello")], max_new_tokens=4)
    assert answer.text is None and answer.extra["tries"] == 3
    assert answer.error.startswith("connection error") and answer.error.endswith("after 3 tries")


# ---- the pure parts -------------------------------------------------------------------------------------
def test_backoff_doubles_with_jitter_caps_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=3.0, jitter=0.25)
    assert [policy.delay(k, None, rand=lambda: 0.0) for k in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(2, None, rand=lambda: 1.0) == 0.75  # up to 25% less, so clients spread out
    assert policy.delay(3, 0.0) == 0.0 and policy.delay(1, 7.5) == 7.5 and policy.delay(1, 1e6) == 60.0
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now


def test_base_urls_gain_v1_only_when_they_have_no_path() -> None:
    assert normalize_base_url("http://h:8080") == "http://h:8080/v1"
    assert normalize_base_url("http://h:8080/") == "http://h:8080/v1"
    assert normalize_base_url("https://api.example.com/v1/") == "https://api.example.com/v1"
    with pytest.raises(ValueError, match="not an http"):
        normalize_base_url("127.0.0.1:8080")


def test_lm_serve_answers_only_its_own_host_names_and_serves_no_cdn_pages(lm_server: str) -> None:
    """As `mtpeft serve`: a web page cannot read it through DNS rebinding, and no page loads from a CDN."""
    for host in ("attacker.example", "attacker.example:8080", "localhost.attacker.example"):
        refused = httpx.get(f"{lm_server}/v1/models", headers={"Host": host}, timeout=10)
        assert refused.status_code == 400 and "--allowed-hosts" in refused.text, host
    own = httpx.get(f"{lm_server}/v1/models", headers={"Host": "localhost:1234"}, timeout=10)
    assert own.status_code == 200
    for page in ("/docs", "/redoc"):
        assert httpx.get(f"{lm_server}{page}", timeout=10).status_code == 404
