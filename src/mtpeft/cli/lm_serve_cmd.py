"""`mtpeft lm-serve MODEL`: one local causal LM behind an OpenAI-compatible API (prompting/lm_server.py)."""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mtpeft.prompting.lm_server import ServedModel


def register(app: typer.Typer) -> None:
    app.command("lm-serve")(lm_serve)


def lm_serve(
    model: str = typer.Argument(..., help="A decoder from `mtpeft models`, a local folder or a hub id."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    allowed_hosts: list[str] = typer.Option(
        [],
        "--allowed-hosts",
        help="Host names clients may use besides loopback and --host (repeat; *.example.com, '*' for any).",
    ),
    port: int = typer.Option(8080, min=0, max=65535, help="Port (0: any free port, printed at start)."),
    max_new_tokens_cap: int = typer.Option(
        64, min=1, help="Largest max_tokens a request may ask for (generation is the costly part)."
    ),
    context_length: int | None = typer.Option(
        None, min=8, help="Tokens served, prompt + reply (default: 2048, or the model's limit if smaller)."
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, ... (default: the GPU if there is one)."),
    log_level: str = typer.Option("warning", help="uvicorn log level (info logs every request)."),
) -> None:
    """Serve MODEL at /v1/chat/completions and /v1/models (greedy decoding, one request at a time).

    Then: mtpeft prompt --model openai:http://HOST:PORT/v1 --model-name MODEL (or any OpenAI client).
    No API key.
    """
    # Shared with `mtpeft serve`: bind before loading (a taken port fails at once), HTTP on a thread
    # and the model on this main thread, Ctrl-C and SIGTERM stopping both.
    from mtpeft.cli.serve_cmd import _allowed_hosts
    from mtpeft.serve.process import bind, serve_on_main_thread

    hosts = _allowed_hosts(host, allowed_hosts)  # a bad pattern fails before the model loads
    listener = bind(host, port)
    import uvicorn

    from mtpeft.prompting.lm_server import create_app, load_model

    lm = load_model(model, context_length=context_length, device=device)
    app = create_app(lm, max_new_tokens_cap=max_new_tokens_cap, inference_thread=False, allowed_hosts=hosts)
    _announce(listener, lm)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    serve_on_main_thread(uvicorn.Server(config), listener, app.state.worker)


def _announce(listener: socket.socket, lm: ServedModel) -> None:
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    template = "plain 'role: content' prompts (no chat template)" if lm.plain_template else "chat template"
    print(f"model {lm.name}: context {lm.context_length} tokens; {template}", file=sys.stderr)
    # The line tests and scripts wait for (with --port 0 it is the only way to learn the port).
    print(f"serving on http://{shown}:{bound_port} (OpenAI API under /v1)", file=sys.stderr, flush=True)
