"""A small OpenAI-compatible server for ONE local causal LM (`mtpeft lm-serve MODEL`).

    POST /v1/chat/completions  {"messages": [...], "max_tokens": 32, "temperature": 0}
    GET  /v1/models            the one model served, with its context length

For users without llama.cpp or vLLM (`mtpeft prompt --model openai:http://127.0.0.1:8080/v1
--model-name MODEL`), and so the OpenAI backend's tests talk to a real server. Deliberately small: greedy
decoding only (a temperature above 0 is refused, not ignored), n=1, no streaming, no stop sequences, ONE
request generating at a time (a single worker owns the model; others wait in its queue). Every error is
OpenAI-shaped: {"error": {"message", "type", "param", "code"}}.

Generation is the prompting LocalBackend's (prompting/backends/local.py): the tokenizer's chat template,
or plain "role: content" lines for a tokenizer without one (tiny-llama borrows minilm's BERT tokenizer),
so a model answers the same through this server as it does locally.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtpeft.prompting.backends.base import Prompt
from mtpeft.serve.openai_api import (
    APIError,
    ChatRequest,
    Completion,
    FinishReason,
    chat_reply,
    error_response,
    greedy_max_tokens,
    model_card,
    validation_error,
)
from mtpeft.serve.settings import LOOPBACK_HOSTS

if TYPE_CHECKING:
    from mtpeft.prompting.backends.local import LocalBackend


# ---- the model -------------------------------------------------------------------------------------------
class ServedModel:
    """The prompting LocalBackend of one model, behind the server.

    Generating through the same backend as `mtpeft prompt --model NAME` means `--model openai:URL` against
    this server renders, tokenises and decodes exactly as the local run does (same answers, greedy).
    """

    def __init__(self, name: str, backend: LocalBackend) -> None:
        from mtpeft.prompting.backends.local import PLAIN_CHAT_TEMPLATE

        self.name, self.backend = name, backend
        self.context_length = backend.context_length
        # The backend gives a tokenizer without a chat template its plain "role: content" one.
        template = getattr(getattr(backend, "tokenizer", None), "chat_template", None)
        self.plain_template = template == PLAIN_CHAT_TEMPLATE

    def complete(self, prompt: Prompt, max_tokens: int) -> Completion:
        # The local backend would cut a long prompt to fit; a server says so instead (as OpenAI does).
        prompt_tokens = self.backend.count_tokens(prompt)
        if prompt_tokens + max_tokens > self.context_length:
            raise APIError(
                400,
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: more than the "
                f"{self.context_length}-token context served (--context-length); shorten the messages",
                param="messages",
                code="context_length_exceeded",
            )
        (answer,) = self.backend.generate([prompt], max_new_tokens=max_tokens)
        if answer.text is None:
            raise RuntimeError(answer.error or "the model gave no answer")
        # The backend stops at the end token; a reply of the full budget is taken as cut off.
        finish: FinishReason = "length" if answer.tokens_out >= max_tokens else "stop"
        return Completion(answer.text, answer.tokens_in, answer.tokens_out, finish)


def load_model(name: str, *, context_length: int | None = None, device: str | None = None) -> ServedModel:
    """A decoder from `mtpeft models`, a local folder or a hub id (loaded as `mtpeft prompt` loads it).

    context_length: tokens served (prompt + reply); None means the prompting default, or the model's
    own limit where that is smaller.
    """
    from mtpeft.prompting.backends.local import LocalBackend

    # batch_size=1: one request at a time, and no padding, so a reply never depends on its neighbours.
    backend = LocalBackend(name, context_length=context_length, batch_size=1, device=device)
    return ServedModel(name, backend)


# ---- one worker owns the model ---------------------------------------------------------------------------
class ModelWorker:
    """Runs model calls one at a time on the thread that calls run_forever().

    `mtpeft lm-serve` calls it on the main thread, as `mtpeft serve` does: torch ops started from a
    second thread pay for a second OpenMP pool (serve/batcher.py's run_forever has the measurements).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run_forever, name="mtpeft-lm", daemon=True)

    def submit(self, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._queue.put((call, future))
        return future

    def start(self) -> None:
        """On a thread of its own (tests, notebooks), instead of run_forever() on the caller's."""
        self._thread.start()

    def run_forever(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                break
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue  # the client went away before its turn
            try:
                future.set_result(call())
            except BaseException as err:  # noqa: BLE001 - the HTTP handler turns it into a 500
                future.set_exception(err)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)


# ---- HTTP ------------------------------------------------------------------------------------------------
def create_app(
    lm: ServedModel,
    *,
    max_new_tokens_cap: int = 64,
    inference_thread: bool = True,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The app over a loaded model; inference_thread=False: the caller runs app.state.worker.run_forever().

    As `mtpeft serve`: only the `allowed_hosts` Host names are answered (DNS rebinding), and there are
    no /docs or /redoc pages (FastAPI's load their scripts from a CDN)."""
    from mtpeft.serve.app import HostCheck

    worker = ModelWorker()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if inference_thread:
            worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="mtpeft lm-serve",
        summary="One local causal LM, OpenAI-compatible.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(HostCheck, allowed_hosts=list(allowed_hosts))
    app.state.worker = worker
    _add_error_handlers(app)
    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = model_card(
            lm.name, created, context_length=lm.context_length, chat_template=not lm.plain_template
        )
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        max_tokens = _check(body, lm, max_new_tokens_cap)
        prompt: Prompt = [{"role": m.role, "content": m.content} for m in body.messages]
        # Tokenising runs on the worker too: one thread touches the model and its tokenizer.
        done = await asyncio.wrap_future(worker.submit(lambda: lm.complete(prompt, max_tokens)))
        return chat_reply(lm.name, done)

    return app


def _check(body: ChatRequest, lm: ServedModel, cap: int) -> int:
    """The request's max_tokens after refusing what this server does not do."""
    if body.model is not None and body.model != lm.name:
        raise APIError(
            404,
            f"model {body.model!r} is not served here; this server serves {lm.name!r}",
            param="model",
            code="model_not_found",
        )
    return greedy_max_tokens(body, cap, "mtpeft lm-serve --max-new-tokens-cap")


# ---- errors, OpenAI-shaped -------------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, APIError)
        return error_response(err.status, err.message, err.param, err.code)

    async def invalid(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return validation_error(err)

    async def http_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        return error_response(err.status_code, str(err.detail))

    async def crash(_request: Request, err: Exception) -> JSONResponse:
        print(f"lm-serve: {type(err).__name__}: {err}", file=sys.stderr)
        return error_response(500, f"generation failed: {type(err).__name__}: {err}")

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)
