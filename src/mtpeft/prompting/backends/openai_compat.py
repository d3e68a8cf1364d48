"""Any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp's server, `mtpeft lm-serve`) as a backend.

Requests go through the maintained `openai` client; this module adds what a benchmark run needs on top:
a bounded number of requests in flight, retries whose count and backoff are ours (so they are explicit
and testable, and Retry-After is honoured), and one `Answer` per prompt, in order, whatever happens: a
request that still fails after its retries is an Answer with `error` set, never a lost batch.

Token counts come from the response's `usage`; servers that omit it get an estimate (characters / 4),
flagged in `Answer.extra["tokens_estimated"]`. Generation is greedy (temperature 0, n=1).
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mtpeft.prompting.backends.base import Answer, Prompt

if TYPE_CHECKING:
    import openai

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English and code with BPE vocabularies
MESSAGE_OVERHEAD_TOKENS = 4  # role and separator tokens a chat template adds per message
REPLY_PRIMING_TOKENS = 3  # the "assistant" header the template appends before the reply
PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key, but the client refuses to start without one
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx: timeouts, conflicts, rate limits


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before trying a failed request again.

    Try k (k = 1 .. max_retries) waits min(backoff_s * 2**(k-1), max_backoff_s), minus up to `jitter` of
    it at random (so clients that failed together do not retry together), unless the server sent
    Retry-After: then that, capped at max_retry_after_s (a server asking for an hour must not stall a run).
    """

    max_retries: int = 4  # retries after the first try: max_retries + 1 tries in all
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    jitter: float = 0.25
    max_retry_after_s: float = 60.0

    def delay(
        self, retry: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        base = min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)
        return base * (1 - self.jitter * rand())


class OpenAIBackend:
    """Greedy chat completions from an OpenAI-compatible server, `concurrency` requests at a time."""

    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout: float = 60.0,
        context_length: int = 4096,
    ) -> None:
        """model: the server's model id; empty asks GET /v1/models for the first one (one-model servers).

        api_key_env names the environment variable holding the key; unset, a placeholder is sent (local
        servers need none). base_url may omit /v1 (http://host:8080 means http://host:8080/v1).
        """
        import openai

        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.base_url = normalize_base_url(base_url)
        self.context_length = context_length
        self.concurrency = concurrency
        self.retry = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        # The client's own retries are off: ours count tries per prompt and report them in the Answer.
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(api_key_env) or PLACEHOLDER_KEY,
            max_retries=0,
            timeout=timeout,
        )
        self.model = model or self._served_model()
        self.name = f"openai:{self.base_url}#{self.model}"

    # ---- PromptBackend ---------------------------------------------------------------------------------
    def count_tokens(self, prompt: Prompt) -> int:
        """An estimate, the server's tokenizer not being at hand: chars/4 plus a per-message cost."""
        return estimate_prompt_tokens(prompt)

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int) -> list[Answer]:
        """One Answer per prompt, in order; requests run `concurrency` at a time."""
        if not prompts:
            return []
        workers = min(self.concurrency, len(prompts))
        with ThreadPoolExecutor(workers, thread_name_prefix="mtpeft-openai") as pool:
            # map keeps the prompts' order whatever order the replies arrive in.
            return list(pool.map(lambda prompt: self._answer(prompt, max_new_tokens), prompts))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- one prompt ------------------------------------------------------------------------------------
    def _answer(self, prompt: Prompt, max_new_tokens: int) -> Answer:
        started = time.perf_counter()
        tries, outcome = self._with_retries(lambda: self._request(prompt, max_new_tokens))
        seconds = time.perf_counter() - started
        if isinstance(outcome, str):
            return Answer(text=None, seconds=seconds, error=outcome, extra={"tries": tries})
        return self._to_answer(prompt, outcome, seconds, tries)

    def _request(self, prompt: Prompt, max_new_tokens: int) -> Any:
        return self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": m["role"], "content": m["content"]} for m in prompt],  # type: ignore[misc]
            max_tokens=max_new_tokens,
            temperature=0,
            n=1,
        )

    def _with_retries(self, call: Callable[[], Any]) -> tuple[int, Any]:
        """(tries, the call's result) or (tries, why it failed) once the retries are spent."""
        import openai

        tries = 0
        while True:
            tries += 1
            try:
                return tries, call()
            except (openai.APIStatusError, openai.APIConnectionError) as err:
                retry_after, why = _failure(err)
                if why is None or tries > self.retry.max_retries:
                    return tries, f"{why or _describe(err)} after {_plural(tries, 'try', 'tries')}"
                time.sleep(self.retry.delay(tries, retry_after))
            except Exception as err:  # noqa: BLE001 - a malformed reply must cost one Answer, not the batch
                return tries, f"unreadable reply: {type(err).__name__}: {err}"

    def _to_answer(self, prompt: Prompt, completion: Any, seconds: float, tries: int) -> Answer:
        if not completion.choices:
            return Answer(
                text=None, seconds=seconds, error="the server returned no choices", extra={"tries": tries}
            )
        choice = completion.choices[0]
        text = choice.message.content or ""
        extra: dict[str, Any] = {"tries": tries, "finish_reason": choice.finish_reason}
        usage = completion.usage
        if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
            tokens_in, tokens_out = usage.prompt_tokens, usage.completion_tokens
        else:  # some servers send no usage: estimate, and say so
            tokens_in, tokens_out = estimate_prompt_tokens(prompt), estimate_tokens(text)
            extra["tokens_estimated"] = True
        return Answer(text=text, tokens_in=tokens_in, tokens_out=tokens_out, seconds=seconds, extra=extra)

    def _served_model(self) -> str:
        models = self.client.with_options(max_retries=2).models.list()
        ids = [model.id for model in models.data]
        if not ids:
            raise ValueError(f"{self.base_url}/models lists no model; name one (openai:URL#MODEL)")
        return ids[0]


# ---- failures ------------------------------------------------------------------------------------------
def _failure(err: Exception) -> tuple[float | None, str | None]:
    """(Retry-After seconds, a description) when the failure is worth retrying, else (None, None)."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return None, "timeout"
    if isinstance(err, openai.APIConnectionError):
        return None, f"connection error ({_cause(err)})"
    assert isinstance(err, openai.APIStatusError)
    if err.status_code in RETRYABLE_STATUS or err.status_code >= 500:
        return retry_after_seconds(err.response.headers.get("retry-after")), _describe(err)
    return None, None


def _describe(err: Exception) -> str:
    import openai

    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {_server_message(err)}"
    return f"{type(err).__name__}: {err}"


def _server_message(err: openai.APIStatusError) -> str:
    """The server's own words: OpenAI-style {"error": {"message"}}, else the start of the body."""
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    text = err.response.text if err.response is not None else ""
    return text[:200] or err.message


def _cause(err: Exception) -> str:
    cause = err.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(err)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date (RFC 9110); None when absent or odd."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# ---- URLs and token estimates ------------------------------------------------------------------------------
def normalize_base_url(url: str) -> str:
    """http://host:8080 and http://host:8080/ mean http://host:8080/v1, where these servers answer."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL of an OpenAI-compatible server")
    trimmed = url.rstrip("/")
    return trimmed + "/v1" if parsed.path in ("", "/") else trimmed


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(prompt: Prompt) -> int:
    return REPLY_PRIMING_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(m["content"]) for m in prompt)
