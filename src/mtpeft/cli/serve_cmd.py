"""`mtpeft serve RUN_DIR [RUN_DIR ...]`: the HTTP API and web page (mtpeft/serve/)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import typer

from mtpeft.errors import InputError
from mtpeft.serve.process import bind, serve_on_main_thread
from mtpeft.serve.settings import WILDCARD_BINDS

API_KEY_ENV = "MTPEFT_API_KEY"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    runs: list[str] = typer.Argument(
        ..., help="Runs to serve: RUN_DIR or NAME=RUN_DIR (the first is the default); an export folder too."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    allowed_hosts: list[str] = typer.Option(
        [],
        "--allowed-hosts",
        help="Host names clients may use besides loopback and --host (repeat; *.example.com, '*' for any).",
    ),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free port, printed at start)."),
    index: list[str] = typer.Option([], "--index", help="Search index from mtpeft index: DIR or NAME=DIR."),
    api_key_file: Path | None = typer.Option(
        None, help=f"File holding the API key clients must send (or set {API_KEY_ENV})."
    ),
    max_body_bytes: int = typer.Option(1_000_000, min=1, help="Largest request body."),
    max_snippets: int = typer.Option(64, min=1, help="Snippets, pairs or queries per request."),
    max_chars: int = typer.Option(20_000, min=1, help="Characters per snippet or query."),
    max_k: int = typer.Option(100, min=1, help="Largest k for /v1/search."),
    max_new_tokens: int = typer.Option(
        256, min=1, help="Most generated tokens per reply (/v1/generate, /v1/chat/completions)."
    ),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Gather concurrent requests."),
    batch_wait_ms: float = typer.Option(5.0, min=0, help="How long to wait for more requests to batch."),
    batch_snippets: int = typer.Option(64, min=1, help="Snippets per backbone pass."),
    batch_tokens: int = typer.Option(16_384, min=1, help="Estimated tokens gathered into one batch."),
    pass_tokens: int = typer.Option(
        1024, min=1, help="Padded tokens per backbone forward (a batch splits by length); raise on a GPU."
    ),
    max_queue: int = typer.Option(1024, min=1, help="Requests waiting before the server answers 429."),
    max_wait_s: float = typer.Option(
        60.0, min=0.1, help="Seconds a request may wait for the model before a 503 with Retry-After."
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: the GPU if there is one)."),
    log_level: str = typer.Option("warning", help="uvicorn log level (info logs every request)."),
) -> None:
    """Serve every task of the runs over HTTP: /v1/analyze, /v1/embed, /v1/search, /v1/generate, an
    OpenAI-compatible /v1/chat/completions for generative tasks, /v1/tasks, / (page)."""
    from mtpeft.serve.settings import Batching, Limits

    limits = Limits(max_body_bytes, max_snippets, max_chars, max_k, max_new_tokens, max_wait_s)
    hosts = _allowed_hosts(host, allowed_hosts)
    batch = Batching(
        enabled=batching,
        max_wait_ms=batch_wait_ms,
        max_snippets=batch_snippets,
        max_tokens=batch_tokens,
        pass_tokens=pass_tokens,
        max_queue=max_queue,
    )
    api_key = _api_key(api_key_file)
    listener = bind(host, port)  # before loading: a taken port fails in a second, not after the model
    import uvicorn

    from mtpeft.serve.app import create_app
    from mtpeft.serve.loading import load_indexes, load_runs

    loaded = load_runs(runs, device=device, batch_size=batch_snippets)
    indexes = load_indexes(index, loaded)
    app = create_app(
        loaded,
        indexes,
        limits=limits,
        batching=batch,
        api_key=api_key,
        allowed_hosts=hosts,
        inference_thread=False,
    )
    _announce(listener, loaded, indexes, api_key is not None, host, hosts)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    serve_on_main_thread(uvicorn.Server(config), listener, app.state.batcher)


def _allowed_hosts(host: str, extra: list[str]) -> list[str]:
    from mtpeft.serve.settings import allowed_hosts

    try:
        return allowed_hosts(host, extra)
    except ValueError as err:
        raise InputError(f"--allowed-hosts: {err}") from None


def _api_key(path: Path | None) -> str | None:
    if path is not None:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: cannot read the API key file ({err})") from None
        if not key:
            raise InputError(f"{path}: the API key file is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def _announce(
    listener: socket.socket, runs: dict, indexes: dict, keyed: bool, host: str, hosts: list[str]
) -> None:
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    for name, run in runs.items():
        memory = getattr(run, "memory", None) or {}
        base = memory.get("shared_backbone_with")
        shared = f", shares the backbone of {base}" if base else ""
        added = f", +{memory['rss_bytes_added'] / 2**20:.0f} MiB" if "rss_bytes_added" in memory else ""
        what = f"{run.info['model']}, {run.info['method']}; {', '.join(run.tasks)}"
        print(f"run {name}: {what}{shared}{added}", file=sys.stderr)
    for name, served in indexes.items():
        print(f"index {name}: {len(served.index)} units, run {served.run}", file=sys.stderr)
    if not keyed and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host} without an API key; set {API_KEY_ENV}", file=sys.stderr)
    if host.strip("[]") in WILDCARD_BINDS and "*" not in hosts:
        print(
            f"note: answering only requests addressed to {', '.join(hosts)}; name the host names clients "
            "use with --allowed-hosts",
            file=sys.stderr,
        )
    # The line tests and scripts wait for (with --port 0 it is the only way to learn the port).
    print(f"serving on http://{shown}:{bound_port} (page at /, API under /v1)", file=sys.stderr, flush=True)
