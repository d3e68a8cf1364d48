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
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtpeft.prompting.backends.base import Prompt

if TYPE_CHECKING:
    from mtpeft.prompting.backends.local import LocalBackend


# ---- the model -------------------------------------------------------------------------------------------
@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


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
        finish: Literal["stop", "length"] = "length" if answer.tokens_out >= max_tokens else "stop"
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
class APIError(Exception):
    """An OpenAI-style error reply."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str  # text only: content parts (images, audio) are not supported
    name: str | None = None


class ChatRequest(BaseModel):
    # Unknown fields are refused: a sampling option silently ignored would make answers lie.
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = None  # no effect on greedy decoding
    n: int | None = None
    stream: bool | None = None
    stop: str | list[str] | None = None
    seed: int | None = None  # greedy decoding is deterministic anyway
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    logprobs: bool | None = None


def create_app(lm: ServedModel, *, max_new_tokens_cap: int = 64, inference_thread: bool = True) -> FastAPI:
    """The app over a loaded model; inference_thread=False: the caller runs app.state.worker.run_forever()."""
    worker = ModelWorker()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if inference_thread:
            worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="mtpeft lm-serve", summary="One local causal LM, OpenAI-compatible.", lifespan=lifespan
    )
    app.state.worker = worker
    _add_error_handlers(app)
    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": lm.name, "object": "model", "created": created, "owned_by": "mtpeft"}
        card |= {"context_length": lm.context_length, "chat_template": not lm.plain_template}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        max_tokens = _check(body, lm, max_new_tokens_cap)
        prompt: Prompt = [{"role": m.role, "content": m.content} for m in body.messages]
        # Tokenising runs on the worker too: one thread touches the model and its tokenizer.
        done = await asyncio.wrap_future(worker.submit(lambda: lm.complete(prompt, max_tokens)))
        return _reply(lm.name, done)

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
    if body.temperature:
        raise APIError(
            400,
            f"temperature {body.temperature} asks for sampling; this server decodes "
            "greedily only: send temperature 0 (or omit it)",
            param="temperature",
        )
    if body.n not in (None, 1):
        raise APIError(
            400, f"n={body.n}: this server returns one choice (greedy decoding gives one answer)", param="n"
        )
    if body.stream:
        raise APIError(400, "streaming is not supported: send stream false (or omit it)", param="stream")
    if body.stop:
        raise APIError(400, "stop sequences are not supported; cut the reply yourself", param="stop")
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    max_tokens = body.max_completion_tokens or body.max_tokens or cap
    if max_tokens > cap:
        raise APIError(
            400,
            f"max_tokens {max_tokens} is over this server's cap of {cap} "
            "(mtpeft lm-serve --max-new-tokens-cap)",
            param="max_tokens",
        )
    return max_tokens


def _reply(model: str, done: Completion) -> dict[str, Any]:
    usage = {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": done.text},
        "finish_reason": done.finish_reason,
        "logprobs": None,
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


# ---- errors, OpenAI-shaped -------------------------------------------------------------------------------
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error"}


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, APIError)
        return _error(err.status, err.message, err.param, err.code)

    async def invalid(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        message, param = _validation_message(err)
        return _error(400, message, param)  # OpenAI answers 400, not FastAPI's 422, for a bad body

    async def http_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        return _error(err.status_code, str(err.detail))

    async def crash(_request: Request, err: Exception) -> JSONResponse:
        print(f"lm-serve: {type(err).__name__}: {err}", file=sys.stderr)
        return _error(500, f"generation failed: {type(err).__name__}: {err}")

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """'messages[0].role: ...' lines, and the first field named (OpenAI's `param`)."""
    lines, params = [], []
    for problem in err.errors():
        location = [str(p) for p in problem.get("loc", ()) if p != "body"]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in location).lstrip(".") or "body"
        if problem.get("type") == "json_invalid":
            lines.append("the body is not valid JSON")
        elif problem.get("type") == "extra_forbidden":
            lines.append(f"{where}: unknown or unsupported field")
        else:
            lines.append(f"{where}: {problem.get('msg', 'invalid')}")
        params.append(where)
    return "; ".join(lines), (params[0] if params else None)
