"""The web page of `mtpeft serve` as a user drives it: the real page in headless Chromium (Playwright),
against the app served by uvicorn on loopback, its answers checked against the Python API.

Needs Debian's `chromium` (`apt-get install -y chromium`; tests/browser.py tries that once, as root) and the
`playwright` package (a dev dependency; it drives the system chromium, so no browser download is needed).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

from browser import chromium_or_skip

SNIPPET = "int f(char *s) {\n    char b[8];\n    strcpy(b, s);\n    return b[0];\n}\n"
OTHER = "def add(a, b):\n    return a + b\n"
SOURCES = {
    "maths.py": "def add(a, b):\n    return a + b\n\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n",
    "text.py": "def shout(s):\n    return s.upper() + '!'\n\n\ndef words(s):\n    return s.split()\n",
    "a<i>b.py": "def tag(x):\n    return '<b>' + str(x) + '</b>'\n",  # a path the page must not render
}
TIMEOUT_MS = 20_000


@contextmanager
def _serving(app) -> Iterator[str]:
    """The app under uvicorn in a thread on a loopback port the OS chose; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """Checked first (autouse, session scope), so a missing browser skips before the run is trained."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (a dev dependency)")
    return chromium_or_skip()


@pytest.fixture(scope="module")
def chromium_browser(chromium: str) -> Iterator:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(chromium_browser) -> Iterator:
    context = chromium_browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page's script failed: {errors}"


@pytest.fixture(scope="module")
def indexes(served_run, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from mtpeft.index import build_index
    from mtpeft.serve.loading import load_indexes

    root = tmp_path_factory.mktemp("indexed")
    source, out = root / "src", root / "index"
    source.mkdir()
    for name, text in SOURCES.items():
        (source / name).write_text(text, encoding="utf-8")
    build_index(served_run, source, out, progress=False)
    return load_indexes([f"code={out}"], {"tiny": served_run})


@pytest.fixture(scope="module")
def server(served_run, indexes) -> Iterator[str]:
    from mtpeft.serve.app import create_app

    with _serving(create_app({"tiny": served_run}, indexes)) as url:
        yield url


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#app[data-state=ready]")


def _answers(page, table: str) -> dict[str, dict]:
    """{task: {kind, label, value, shown}} as the page shows them in `table`."""
    rows = page.eval_on_selector_all(
        f"{table} tbody tr",
        """rows => rows.map(r => ({
            task: r.dataset.task, kind: r.querySelector('.kind').textContent,
            label: r.querySelector('.label').textContent,
            value: r.querySelector('.probability').dataset.value,
            shown: r.querySelector('.probability').textContent}))""",
    )
    return {row.pop("task"): row for row in rows}


def _same(shown: dict[str, dict], expected: dict, kinds: dict[str, str]) -> None:
    assert set(shown) == set(expected)
    for task, want in expected.items():
        got = shown[task]
        assert got["kind"] == kinds[task]
        assert got["label"] == want["label"], task
        assert float(got["value"]) == pytest.approx(want["probability"], abs=1e-4), task
        assert got["shown"].endswith("%")  # a percentage to one decimal
        assert float(got["shown"][:-1]) == pytest.approx(100 * float(got["value"]), abs=0.05 + 1e-9)


def test_the_page_answers_every_task_like_the_python_api(page, server, served_run) -> None:
    _open(page, server)
    kinds = {task.name: task.kind for task in served_run.tasks.values()}
    listed = page.eval_on_selector_all("#tasks li", "items => items.map(i => i.dataset.task)")
    assert listed == list(kinds)
    assert page.is_hidden("#run-picker")  # one run: no selector
    assert page.is_visible("#pair-section") == bool(served_run.pair_tasks)

    # The snippet arrives through the file input (read in the browser), the second one is typed.
    page.set_input_files("#file", {"name": "f.c", "mimeType": "text/plain", "buffer": SNIPPET.encode()})
    # expect() polls through Playwright's own selectors: the page's CSP forbids the eval that
    # wait_for_function(string) relies on, as it should.
    expect(page.locator("#code")).to_have_value(SNIPPET)
    page.fill("#compare", OTHER)
    page.click("#analyze")
    page.wait_for_selector("#analyze-form[data-state=done]")
    assert page.is_hidden("#error") and page.is_enabled("#analyze")

    _same(_answers(page, "#snippet-results"), served_run.analyze(SNIPPET), kinds)
    expected_pairs = {task: served_run.compare(SNIPPET, OTHER, task=task) for task in served_run.pair_tasks}
    _same(_answers(page, "#pair-results"), expected_pairs, kinds)


def test_search_lists_the_indexes_hits(page, server, served_run, indexes) -> None:
    _open(page, server)
    assert page.is_visible("#search-section")
    query = "add two numbers"
    page.fill("#query", query)
    functions = sum(source.count("def ") for source in SOURCES.values())
    page.fill("#k", str(functions))  # every function: the odd path is listed whatever the ranking
    page.click("#search")
    page.wait_for_selector("#search-form[data-state=done]")
    hits = page.eval_on_selector_all(
        "#search-results li.hit",
        """items => items.map(i => ({
            location: i.querySelector('.location').textContent, name: i.querySelector('.name').textContent,
            score: Number(i.querySelector('.score').dataset.value)}))""",
    )
    expected = served_run.search(query, functions, index=indexes["code"].index)
    assert len(hits) == functions
    assert [(h["location"], h["name"]) for h in hits] == [(e.location, e.name) for e in expected]
    assert [h["score"] for h in hits] == pytest.approx([e.score for e in expected], abs=1e-4)
    assert any(h["location"].startswith("a<i>b.py:") for h in hits)  # shown as text ...
    assert page.query_selector("#search-results i") is None  # ... never parsed as HTML


def test_errors_and_the_api_key_are_shown_on_the_page(page, served_run) -> None:
    from mtpeft.serve.app import create_app
    from mtpeft.serve.settings import Limits

    runs = {"tiny": served_run, "again": served_run}
    app = create_app(runs, limits=Limits(max_chars=100), api_key="s3cret")
    with _serving(app) as url:
        page.goto(url)
        page.wait_for_selector("#app[data-state=error]")
        assert "API key" in page.text_content("#error") and page.is_visible("#error")
        assert page.is_hidden("#search-section")  # no index served

        page.fill("#api-key", "s3cret")
        page.click("#key-save")
        page.wait_for_selector("#app[data-state=ready]")
        assert page.is_hidden("#error")
        assert page.evaluate("sessionStorage.getItem('mtpeft.apiKey')") == "s3cret"
        assert page.is_visible("#run-picker")
        assert page.eval_on_selector_all("#run option", "os => os.map(o => o.value)") == list(runs)

        page.fill("#code", "x" * 101)
        page.click("#analyze")
        page.wait_for_selector("#analyze-form[data-state=error]")
        message = page.text_content("#error")
        assert page.is_visible("#error") and page.is_enabled("#analyze")
        assert message == "snippets[0] has 101 characters; this server's limit is 100 (--max-chars)"
        assert page.is_hidden("#results")


def test_the_page_shows_what_a_generative_run_writes(page, gen_run) -> None:
    from mtpeft.serve.app import create_app

    code = "public int add ( int a , int b ) { return a - b ; }"
    with _serving(create_app({"gen": gen_run})) as url:
        _open(page, url)
        page.fill("#code", code)
        page.fill("#compare", OTHER)
        page.click("#analyze")
        page.wait_for_selector("#analyze-form[data-state=done]")
        assert page.is_hidden("#error") and page.is_visible("#generated-box")
        written = page.text_content("#generated dd[data-task=repair] pre")
        assert written == gen_run.generate(code, task="repair")
        kinds = {task.name: task.kind for task in gen_run.tasks.values()}
        _same(_answers(page, "#pair-results"), {"clone": gen_run.compare(code, OTHER, task="clone")}, kinds)
