"""The OpenAI chat-completions wire format, shared by `mtpeft lm-serve` and `mtpeft serve`.

Request and reply bodies of POST /v1/chat/completions and OpenAI-shaped errors
({"error": {"message", "type", "param", "code"}}), so any OpenAI client (the `openai` package, LangChain,
an IDE plugin) talks to either server. Both decode greedily, one choice, no streaming: an option that
would change the answer (temperature above 0, n above 1, stop sequences, streaming, logprobs) is refused
with a 400 naming it, never silently ignored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length"]


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


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


def greedy_max_tokens(body: ChatRequest, cap: int, cap_flag: str) -> int:
    """The request's max_tokens (default: the cap), after refusing what greedy one-choice decoding cannot do.

    cap_flag: the server option that raises the cap, named in the error.
    """
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
            f"max_tokens {max_tokens} is over this server's cap of {cap} ({cap_flag})",
            param="max_tokens",
        )
    return max_tokens


def model_card(name: str, created: int, **extra: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "mtpeft"} | extra


def chat_reply(model: str, done: Completion) -> dict[str, Any]:
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
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error(err: RequestValidationError) -> JSONResponse:
    """400 (as OpenAI answers, not FastAPI's 422): 'messages[0].role: ...' lines, the first field as param."""
    lines, params = [], []
    for problem in err.errors():
        location = [str(p) for p in problem.get("loc", ()) if p != "body"]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in location).lstrip(".") or "body"
        if problem.get("type") == "json_invalid":
            lines.append(problem.get("ctx", {}).get("error", "the body is not valid JSON"))
        elif problem.get("type") == "extra_forbidden":
            lines.append(f"{where}: unknown or unsupported field")
        else:
            lines.append(f"{where}: {problem.get('msg', 'invalid')}")
        params.append(where)
    return error_response(400, "; ".join(lines), params[0] if params else None)
