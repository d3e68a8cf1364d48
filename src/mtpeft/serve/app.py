"""The HTTP API of `mtpeft serve`: every task of the loaded runs, micro-batched, with limits and metrics.

    POST /v1/analyze   {"snippets": [...], "pairs": [{"a", "b"}], "tasks": [...], "run": NAME}
    POST /v1/embed     {"snippets": [...], "task": NAME, "query": false, "run": NAME}
    POST /v1/search    {"query": "..." | [...], "k": 10, "index": NAME}
    POST /v1/generate  {"snippets": [...], "task": NAME, "run": NAME, "max_new_tokens": N}
    POST /v1/chat/completions  OpenAI-compatible, for tasks trained through the LM head (model RUN/TASK)
    GET  /v1/models    those tasks as OpenAI models
    GET  /v1/tasks     runs, their tasks (kind, labels, metrics), indexes, limits
    GET  /healthz      liveness (no key needed)
    GET  /metrics      Prometheus exposition
    GET  /openapi.json the OpenAPI schema, behind the key like /v1. No /docs or /redoc pages: FastAPI's load
                       Swagger UI and ReDoc from a CDN, and no page of this server loads anything from outside
    GET  /             the web page (static/index.html)

Only Host names of loopback (or the ones --host/--allowed-hosts name) are answered: a web page that points
its own name at 127.0.0.1 (DNS rebinding) gets 400, not the index. No response holds an absolute server path.
A request waits at most --max-wait-s for the model (then 503 with Retry-After), and a client that hangs up
takes its queued work with it (batcher.py drops it).

Runs and indexes are the ones named at start; no endpoint takes a path. Every error is JSON
{"detail": "..."} naming the field or the limit (and the flag that changes it); the two OpenAI endpoints
answer errors in OpenAI's shape instead ({"error": {"message", "type", "param", "code"}}, serve/openai_api.py)
so OpenAI clients read them.

A chat completion answers what the task was trained for: its one user message is the input (the code, or
the first fenced code block in it), put into the task's own training prompt (instruction and code), so
the reply is what `run.generate` and `mtpeft predict` give. System and assistant messages are refused, not
ignored: the trained prompt has no place for them.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mtpeft.calibration_file import PrecisionCut, cuts_for
from mtpeft.data.example import blank_text_problem
from mtpeft.data.formats.textio import parse_json, shorten
from mtpeft.errors import DataError, MtpeftError
from mtpeft.serve.batcher import Job, MicroBatcher, ServerBusy, ServerStopping
from mtpeft.serve.metrics import ServerMetrics
from mtpeft.serve.openai_api import (
    APIError,
    ChatRequest,
    Completion,
    chat_reply,
    error_response,
    greedy_max_tokens,
    model_card,
    validation_error,
)
from mtpeft.serve.settings import LOOPBACK_HOSTS, Batching, Limits

if TYPE_CHECKING:
    from mtpeft.api import Run  # or an ExportedRun (mtpeft.export.runtime): the same answering methods
    from mtpeft.index import SearchIndex

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")
ENDPOINTS = (
    "/v1/analyze", "/v1/embed", "/v1/search", "/v1/generate", *OPENAI_PATHS, "/v1/tasks", "/healthz",
    "/metrics", "/openapi.json", "/",
)  # fmt: skip
CLIENT_CLOSED = 499  # nginx's status for "the client hung up first"; only ever seen in the metrics
_FENCED = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)  # a Markdown code block, its language tag skipped
OPEN_PATHS = ("/healthz", "/")  # answer without the API key: liveness probes and the page itself
# The page is one file with inline script and style that talks only to this server: forbid the rest.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class HTTPProblem(Exception):
    """A client error with its status; the handler below turns it into {"detail": message}."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)


# ---- request bodies (unknown fields are refused: a typo must not silently mean "all tasks") ----------
class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: str
    b: str


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snippets: list[str] = Field(default_factory=list, description="Code snippets for one-snippet tasks.")
    pairs: list[Pair] = Field(default_factory=list, description="Snippet pairs for pair tasks (clone).")
    tasks: list[str] | None = Field(default=None, description="Tasks to answer (default: all that apply).")
    run: str | None = Field(default=None, description="Run name (default: the first run served).")
    precision: float | None = Field(
        default=None,
        description="Add 'flagged' to each binary and pair answer: P(positive) at or above the smallest "
        "threshold at which the run's validation precision reaches this (calibrated runs only).",
    )


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snippets: list[str]
    task: str | None = None
    query: bool = False
    run: str | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snippets: list[str]
    task: str | None = Field(default=None, description="Task (default: the run's only generative one).")
    run: str | None = None
    max_new_tokens: int | None = Field(default=None, ge=1, description="Default: the task's limit.")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | list[str]
    k: int = 10
    index: str | None = None


@dataclass
class ServedIndex:
    index: SearchIndex
    run: str  # the served run whose vectors it holds


def create_app(
    runs: dict[str, Run],
    indexes: dict[str, ServedIndex] | None = None,
    *,
    limits: Limits | None = None,
    batching: Batching | None = None,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    inference_thread: bool = True,
) -> FastAPI:
    """The app over runs already loaded (the first is the default) and indexes already checked.

    allowed_hosts: Host header names answered (settings.allowed_hosts builds them from --host and
    --allowed-hosts); others get 400.
    inference_thread: answer on a thread the app starts; False when the caller runs
    `app.state.batcher.run_forever()` itself (`mtpeft serve`, on the main thread: batcher.py says why).
    """
    if not runs:
        raise ValueError("create_app needs at least one run")
    limits, batching, indexes = limits or Limits(), batching or Batching(), indexes or {}
    metrics = ServerMetrics()
    batcher = MicroBatcher(runs, batching, on_batch=metrics.observe_batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Hooks live only while the app runs: a run object outlives apps in tests and notebooks.
        hooks = metrics.watch_backbones(runs)
        saved = {name: run.max_batch_tokens for name, run in runs.items()}
        for run in runs.values():
            run.max_batch_tokens = batching.pass_tokens
        if inference_thread:
            batcher.start()
        yield
        batcher.stop()
        for hook in hooks:
            hook.remove()
        for name, run in runs.items():
            run.max_batch_tokens = saved[name]

    app = FastAPI(
        title="mtpeft",
        summary="Every code-analysis task of a trained mtpeft run, from one backbone pass.",
        lifespan=lifespan,
        dependencies=[Depends(_key_check(api_key))],
        # FastAPI's own schema route skips the app's dependencies (the key): ours is registered below.
        # Its /docs and /redoc pages load scripts from a CDN: not served (see the module docstring).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.router.route_class = _BoundedJsonRoute
    app.state.batcher, app.state.metrics = batcher, metrics
    _add_error_handlers(app)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(HostCheck, allowed_hosts=list(allowed_hosts))  # outermost: before anything else
    _Routes(runs, indexes, limits, batcher, metrics).register(app)

    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.get("/openapi.json", include_in_schema=False)(openapi)
    return app


class _Routes:
    """The endpoints; each validates fully before queueing, so the model only sees good input."""

    def __init__(
        self,
        runs: dict[str, Run],
        indexes: dict[str, ServedIndex],
        limits: Limits,
        batcher: MicroBatcher,
        metrics: ServerMetrics,
    ) -> None:
        self.runs, self.indexes, self.limits = runs, indexes, limits
        self.batcher, self.metrics = batcher, metrics
        self.default_run = next(iter(runs))
        self.created = int(time.time())

    def register(self, app: FastAPI) -> None:
        app.post("/v1/analyze")(self.analyze)
        app.post("/v1/embed")(self.embed)
        app.post("/v1/search")(self.search)
        app.post("/v1/generate")(self.generate)
        app.post("/v1/chat/completions")(self.chat)
        app.get("/v1/models")(self.models)
        app.get("/v1/tasks")(self.tasks)
        app.get("/healthz")(self.healthz)
        app.get("/metrics")(self.prometheus)
        app.get("/", response_class=HTMLResponse)(self.page)

    # ---- endpoints --------------------------------------------------------------------------------
    async def analyze(self, body: AnalyzeRequest, request: Request) -> dict[str, Any]:
        name, run = self._run(body.run)
        if not body.snippets and not body.pairs:
            raise HTTPProblem(422, "give 'snippets' (a list of code strings) and/or 'pairs' ([{a, b}])")
        self._check_count(len(body.snippets) + len(body.pairs), "snippets and pairs")
        self._check_texts(body.snippets, "snippets")
        self._check_texts([p.a for p in body.pairs], "pairs", side="a")
        self._check_texts([p.b for p in body.pairs], "pairs", side="b")
        snippet_tasks, pair_tasks = self._analyze_tasks(name, run, body)
        cuts = self._precision_cuts(run, body.precision, snippet_tasks + pair_tasks)
        jobs: dict[str, Job] = {}
        if body.snippets and snippet_tasks:
            jobs[""] = Job(name, "analyze", body.snippets, snippet_tasks, tokens=_tokens(run, body.snippets))
        for task in pair_tasks if body.pairs else []:
            a, b = [p.a for p in body.pairs], [p.b for p in body.pairs]
            jobs[task] = Job(name, "compare", a, [task], others=b, tokens=_tokens(run, a + b))
        answers = await self._run_jobs(list(jobs.values()), request)
        by_job = dict(zip(jobs, answers, strict=True))
        pairs = [{task: by_job[task][i] for task in pair_tasks} for i in range(len(body.pairs))]
        snippets = by_job.get("", [{} for _ in body.snippets])
        if cuts:
            _flag(snippets + pairs, cuts)
        answer = {"run": name, "snippets": snippets, "pairs": pairs}
        return answer | ({"thresholds": _thresholds(cuts, body.precision)} if cuts else {})

    def _precision_cuts(self, run: Run, precision: float | None, tasks: list[str]) -> list[PrecisionCut]:
        """The request's 'precision' as a threshold per asked binary/pair task, from the run's calibration."""
        if precision is None:
            return []
        if run.calibration is None:
            raise HTTPProblem(422, "'precision': this run is uncalibrated (mtpeft calibrate RUN fits it)")
        try:
            return cuts_for(run.calibration, precision, tasks, "'precision'", "'tasks'")
        except MtpeftError as err:
            raise HTTPProblem(422, str(err)) from None

    async def embed(self, body: EmbedRequest, request: Request) -> dict[str, Any]:
        name, run = self._run(body.run)
        if not body.snippets:
            raise HTTPProblem(422, "'snippets' is empty: give at least one string to embed")
        self._check_count(len(body.snippets), "snippets")
        self._check_texts(body.snippets, "snippets")
        task = self._embedding_task(run, body.task, body.query)
        tokens = _tokens(run, body.snippets)
        job = Job(name, "embed", body.snippets, [task or ""], query=body.query, tokens=tokens)
        (vectors,) = await self._run_jobs([job], request)
        return {"run": name, "task": task, "dim": len(vectors[0]), "vectors": vectors}

    async def search(self, body: SearchRequest, request: Request) -> dict[str, Any]:
        name, served = self._index(body.index)
        queries = [body.query] if isinstance(body.query, str) else body.query
        if not queries:
            raise HTTPProblem(422, "'query' is empty: give a string or a list of strings")
        if not 1 <= body.k <= self.limits.max_k:
            raise HTTPProblem(422, f"'k' must be between 1 and {self.limits.max_k} (--max-k), not {body.k}")
        self._check_count(len(queries), "queries")
        self._check_texts(queries, "query")
        run = self.runs[served.run]
        job = Job(served.run, "embed", queries, [served.index.task], query=True, tokens=_tokens(run, queries))
        (vectors,) = await self._run_jobs([job], request)
        hits = served.index.search(vectors, body.k)
        results = [[asdict(hit) for hit in row] for row in hits]
        return {"index": name, "run": served.run, "task": served.index.task, "results": results}

    async def generate(self, body: GenerateRequest, request: Request) -> dict[str, Any]:
        name, run = self._run(body.run)
        if not body.snippets:
            raise HTTPProblem(422, "'snippets' is empty: give at least one code string")
        self._check_count(len(body.snippets), "snippets")
        self._check_texts(body.snippets, "snippets")
        task = self._generation_task(name, run, body.task)
        max_new = self._check_new_tokens(body.max_new_tokens, "max_new_tokens")
        job = Job(
            name,
            "generate",
            body.snippets,
            [task],
            max_new_tokens=max_new,
            tokens=_tokens(run, body.snippets),
        )
        (replies,) = await self._run_jobs([job], request)
        usage = {k: sum(r[k] for r in replies) for k in ("prompt_tokens", "completion_tokens")}
        return {"run": name, "task": task, "texts": [r["text"] for r in replies], "usage": usage}

    async def models(self) -> dict[str, Any]:
        cards = [
            model_card(f"{name}/{task}", self.created, run=name, task=task, kind=run.tasks[task].kind)
            for name, run in self.runs.items()
            for task in run.generation_tasks
        ]
        return {"object": "list", "data": cards}

    async def chat(self, body: ChatRequest, request: Request) -> dict[str, Any]:
        name, task = self._chat_model(body.model)
        run = self.runs[name]
        max_tokens = greedy_max_tokens(body, self.limits.max_new_tokens, "mtpeft serve --max-new-tokens")
        code = _chat_input(body)
        if len(code) > self.limits.max_chars:
            raise APIError(
                400,
                f"the message holds {len(code)} characters of code; this server's limit is "
                f"{self.limits.max_chars} (--max-chars)",
                param="messages",
            )
        job = Job(name, "generate", [code], [task], max_new_tokens=max_tokens, tokens=_tokens(run, [code]))
        ((reply,),) = await self._run_jobs([job], request)  # its errors: OpenAI-shaped by the handler
        used = reply["completion_tokens"]
        finish = "length" if used >= max_tokens else "stop"  # generation stops at the end token otherwise
        done = Completion(reply["text"], reply["prompt_tokens"], used, finish)
        return chat_reply(f"{name}/{task}", done)

    async def tasks(self) -> dict[str, Any]:
        return {
            "runs": [self._describe_run(name, run) for name, run in self.runs.items()],
            "indexes": [_describe_index(name, served) for name, served in self.indexes.items()],
            "limits": asdict(self.limits),
            "batching": asdict(self.batcher.batching),
        }

    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "runs": list(self.runs), "indexes": list(self.indexes)}

    async def prometheus(self) -> Response:
        self.metrics.queue.set(self.batcher.waiting)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def page(self) -> HTMLResponse:
        return HTMLResponse(_page(), headers=PAGE_HEADERS)

    # ---- helpers ------------------------------------------------------------------------------------
    async def _run_jobs(self, jobs: list[Job], request: Request) -> list[Any]:
        """The jobs' answers. Nobody's time is spent on a request nobody waits for: a client that hangs
        up, or a request still queued after --max-wait-s, withdraws its jobs (the batcher skips them)."""
        self._submit(jobs)
        answers = asyncio.gather(*(asyncio.wrap_future(job.future) for job in jobs))
        gone = asyncio.ensure_future(_client_gone(request.receive))
        try:
            await asyncio.wait(
                {answers, gone}, timeout=self.limits.max_wait_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not answers.done():
                self._give_up(jobs, answers, gone.done())
            return list(await answers)  # done, or every job already in a batch (its time is bounded)
        except MtpeftError as err:  # input the checks above could not see (the run's own checks)
            raise HTTPProblem(422, str(err)) from None
        except ServerStopping as err:
            raise HTTPProblem(503, str(err), retry_after=5) from None
        except asyncio.CancelledError:  # the server cancels handlers it gave up waiting for
            _abandon(jobs, answers)
            raise
        finally:
            gone.cancel()

    def _submit(self, jobs: list[Job]) -> None:
        try:
            for job in jobs:
                self.batcher.submit(job)
        except (ServerBusy, ServerStopping) as err:
            for job in jobs:
                job.future.cancel()  # the ones queued before the refusal
            status, retry = (429, 1) if isinstance(err, ServerBusy) else (503, 5)
            raise HTTPProblem(status, str(err), retry_after=retry) from None

    def _give_up(self, jobs: list[Job], answers: asyncio.Future, client_gone: bool) -> None:
        """Withdraw the jobs of a request whose client left, or that waited --max-wait-s in the queue;
        returns (to keep waiting) only when the wait ran out and every job is already being answered."""
        if client_gone:
            _abandon(jobs, answers)
            raise HTTPProblem(CLIENT_CLOSED, "the client closed the connection before the answer")
        still_queued = [job.future.cancel() for job in jobs]  # False: taken into a batch already
        if any(still_queued):
            _abandon(jobs, answers)
            wait = self.limits.max_wait_s
            raise HTTPProblem(
                503,
                f"not answered within {wait:g} s (--max-wait-s): the server is overloaded; retry later",
                retry_after=max(1, math.ceil(wait / 2)),
            )

    def _run(self, name: str | None) -> tuple[str, Run]:
        chosen = name or self.default_run
        if chosen not in self.runs:
            raise HTTPProblem(404, f"no run named {chosen!r} is served; runs: {', '.join(self.runs)}")
        return chosen, self.runs[chosen]

    def _index(self, name: str | None) -> tuple[str, ServedIndex]:
        if not self.indexes:
            raise HTTPProblem(
                404, "no search index is served; start the server with --index DIR (from mtpeft index)"
            )
        chosen = name or next(iter(self.indexes))
        if chosen not in self.indexes:
            raise HTTPProblem(404, f"no index named {chosen!r}; indexes: {', '.join(self.indexes)}")
        return chosen, self.indexes[chosen]

    def _analyze_tasks(self, name: str, run: Run, body: AnalyzeRequest) -> tuple[list[str], list[str]]:
        snippet, pair = run.snippet_tasks, run.pair_tasks
        if body.tasks is None:
            listing = f"its tasks: {_listing(run)}"
            if body.snippets and not snippet:
                raise HTTPProblem(422, f"run {name!r} has no one-snippet task for 'snippets'; {listing}")
            if body.pairs and not pair:
                raise HTTPProblem(422, f"run {name!r} has no pair task for 'pairs'; {listing}")
            return snippet, pair
        for task in body.tasks:
            if task not in snippet + pair:
                why = "is not a task of" if task not in run.tasks else "is not answered by /v1/analyze on"
                hint = " (use /v1/embed or /v1/search)" if task in run.retrieval_tasks else ""
                raise HTTPProblem(422, f"task {task!r} {why} run {name!r}{hint}; its tasks: {_listing(run)}")
        chosen_snippet = [t for t in dict.fromkeys(body.tasks) if t in snippet]
        chosen_pair = [t for t in dict.fromkeys(body.tasks) if t in pair]
        if body.snippets and not chosen_snippet:
            raise HTTPProblem(422, f"'snippets' given but none of tasks {body.tasks} reads one snippet")
        if body.pairs and not chosen_pair:
            raise HTTPProblem(422, f"'pairs' given but none of tasks {body.tasks} is a pair task")
        return chosen_snippet, chosen_pair

    def _generation_task(self, name: str, run: Run, task: str | None) -> str:
        able = run.generation_tasks
        if task is None:
            if len(able) == 1:
                return able[0]
            if not able:
                raise HTTPProblem(
                    422, f"run {name!r} has no task trained through the LM head; its tasks: {_listing(run)}"
                )
            raise HTTPProblem(422, f"give 'task': run {name!r} generates for {', '.join(able)}")
        if task not in able:
            why = "is not a task of" if task not in run.tasks else "does not generate text on"
            raise HTTPProblem(
                422, f"task {task!r} {why} run {name!r}; it generates for: {', '.join(able) or 'none'}"
            )
        return task

    def _check_new_tokens(self, wanted: int | None, field: str) -> int | None:
        if wanted is not None and wanted > self.limits.max_new_tokens:
            raise HTTPProblem(
                422,
                f"'{field}' {wanted} is over this server's limit of {self.limits.max_new_tokens} "
                "(--max-new-tokens)",
            )
        return wanted

    def _chat_model(self, model: str | None) -> tuple[str, str]:
        """(run, task) of a chat request's model: RUN/TASK, a TASK of the default run, or a RUN with one
        generative task; a 404 listing /v1/models' ids otherwise."""
        ids = [f"{n}/{t}" for n, r in self.runs.items() for t in r.generation_tasks]
        if not ids:
            raise APIError(404, "no served run has a task trained through the LM head", param="model")
        if model is None:
            if len(ids) == 1:
                return tuple(ids[0].split("/", 1))  # type: ignore[return-value]
            raise APIError(400, f"give 'model': one of {', '.join(ids)}", param="model")
        run_name, _, task = model.rpartition("/")
        if run_name in self.runs and task in self.runs[run_name].generation_tasks:
            return run_name, task
        default = self.runs[self.default_run]
        if not run_name and model in default.generation_tasks:
            return self.default_run, model
        if not run_name and model in self.runs and len(self.runs[model].generation_tasks) == 1:
            return model, self.runs[model].generation_tasks[0]
        raise APIError(
            404,
            f"model {model!r} is not served here; models: {', '.join(ids)}",
            param="model",
            code="model_not_found",
        )

    def _embedding_task(self, run: Run, task: str | None, query: bool) -> str | None:
        try:
            return run.embedding_task(task, query=query)
        except MtpeftError as err:
            raise HTTPProblem(422, str(err)) from None

    def _check_count(self, count: int, what: str) -> None:
        if count > self.limits.max_snippets:
            raise HTTPProblem(
                413,
                f"{count} {what} in one request; this server's limit is {self.limits.max_snippets} "
                "(--max-snippets): split the request",
            )

    def _check_texts(self, texts: list[str], field: str, side: str = "") -> None:
        for position, text in enumerate(texts):
            where = f"{field}[{position}]" + (f".{side}" if side else "")
            if len(text) > self.limits.max_chars:
                raise HTTPProblem(
                    413,
                    f"{where} has {len(text)} characters; this server's limit is {self.limits.max_chars} "
                    "(--max-chars)",
                )
            problem = blank_text_problem(text)  # the one rule for empty input (readers, predict, API)
            if problem is not None:
                raise HTTPProblem(422, f"{where} {problem}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise HTTPProblem(
                    422, f"{where} holds a lone surrogate at character {err.start}: not valid Unicode text"
                ) from None

    def _describe_run(self, name: str, run: Run) -> dict[str, Any]:
        endpoints = {"binary": "analyze", "multiclass": "analyze", "pair": "analyze", "retrieval": "embed"}
        endpoints["generation"] = "generate"
        return {
            "name": name,
            "default": name == self.default_run,
            **{k: v for k, v in run.info.items() if k != "run"},  # the run's absolute path: not shown
            "memory": getattr(run, "memory", None),
            "tasks": [
                {
                    "name": task.name,
                    "kind": task.kind,
                    "labels": list(task.labels),
                    "metrics": list(task.metrics),
                    "description": task.description,
                    "max_length": task.max_length,
                    "endpoint": endpoints.get(task.kind, "analyze"),
                }
                for task in run.tasks.values()
            ],
        }


@functools.cache
def _page() -> str:
    return resources.files("mtpeft.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def _describe_index(name: str, served: ServedIndex) -> dict[str, Any]:
    index = served.index
    # The indexed folder by its name only (hit paths are relative to it): no absolute server path.
    root = index.root.name
    return {"name": name, "run": served.run, "task": index.task, "units": len(index), "root": root}


def _chat_input(body: ChatRequest) -> str:
    """The code of a chat request: its one user message, or the first fenced block in it."""
    others = [f"messages[{i}] ({m.role})" for i, m in enumerate(body.messages) if m.role != "user"]
    if others or len(body.messages) != 1:
        raise APIError(
            400,
            "send exactly one user message holding the code: the task's trained prompt adds its own "
            f"instruction, and has no place for {', '.join(others) or 'several user messages'}",
            param="messages",
        )
    content = body.messages[0].content
    fenced = _FENCED.search(content)
    code = fenced.group(1) if fenced else content
    problem = blank_text_problem(code)
    if problem is not None:
        raise APIError(400, f"messages[0].content holds no code: it {problem}", param="messages[0].content")
    return code


def _tokens(run: Run, texts: list[str]) -> int:
    """Tokens a batch will hold, estimated from characters (about 3 per token in code) without tokenising."""
    cap = run.max_tokens
    return sum(min(len(text) // 3 + 2, cap) for text in texts)


def _flag(answers: list[dict[str, Any]], cuts: list[PrecisionCut]) -> None:
    """Each answer of a task with a cut gains 'flagged': P(positive label) at or above the cut."""
    for answer in answers:
        for cut in cuts:
            if cut.task in answer:
                positive = answer[cut.task]["probabilities"][cut.positive_label]
                answer[cut.task] = {**answer[cut.task], "flagged": positive >= cut.choice.threshold}


def _thresholds(cuts: list[PrecisionCut], target: float | None) -> dict[str, dict[str, float | int]]:
    """What each cut reached on the validation split it was chosen on."""
    return {c.task: {"threshold": c.choice.threshold, "precision": c.choice.precision,
                     "precision_low": c.choice.precision_low, "recall": c.choice.recall,
                     "flagged": c.choice.flagged, "examples": c.choice.examples, "target": target or 0.0}
            for c in cuts}  # fmt: skip


def _listing(run: Run) -> str:
    return ", ".join(f"{t.name} ({t.kind})" for t in run.tasks.values())


async def _client_gone(receive: Receive) -> None:
    """Returns once the client has hung up. After the body, an ASGI server's receive() blocks until it
    sends http.disconnect (Starlette's StreamingResponse listens the same way; a plain endpoint has no
    such hook, hence this)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _abandon(jobs: list[Job], answers: asyncio.Future) -> None:
    """Nobody waits for these jobs: queued ones are cancelled (through the gathered futures), and ones
    already in a batch are flagged so the batcher drops them from the groups it has not answered yet."""
    for job in jobs:
        job.abandoned = True
    answers.cancel()


# ---- cross-cutting: Host, key, body parsing and size, metrics, errors ------------------------------
class HostCheck:
    """Starlette's TrustedHostMiddleware decides; only its refusal is replaced (it answers a bare
    'Invalid host header' in plain text): JSON naming the host and the option that allows it."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        passed = False

        async def through(inner_scope: Scope, inner_receive: Receive, _send: Send) -> None:
            nonlocal passed
            passed = True
            await self.app(inner_scope, inner_receive, send)

        async def drop(_message: Message) -> None:  # Starlette's own refusal, replaced below
            return

        gate = TrustedHostMiddleware(through, allowed_hosts=self.allowed_hosts, www_redirect=False)
        await gate(scope, receive, drop)
        if not passed:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            names = ", ".join(self.allowed_hosts)
            message = (
                f"Host {shorten(host)} is not a name this server answers to ({names}); "
                "if clients reach it by that name, start it with --allowed-hosts NAME"
            )
            await _reply(scope, receive, send, 400, message)


class _BoundedJsonRequest(Request):
    """Bodies parsed as data files are (textio.parse_json): nesting, huge integers and duplicate keys are
    one 422 message instead of a RecursionError, a ValueError or the last value silently winning.

    Every problem is raised as json.JSONDecodeError, the one error FastAPI turns into a validation error
    (json_invalid, its message in ctx.error); any other would become a bare 400 "error parsing the body".
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise json.JSONDecodeError(f"the body is not UTF-8 text (byte {err.start})", "", 0) from None
            try:
                self._json = parse_json(text, Path("<body>"))
            except DataError as err:
                field = f", field '{err.field}'" if err.field else ""
                raise json.JSONDecodeError(f"the body{field}: {err.reason}", "", 0) from None
        return self._json


class _BoundedJsonRoute(APIRoute):
    """FastAPI's documented hook for a custom Request class (it reads the body with request.json())."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(_BoundedJsonRequest(request.scope, request.receive))

        return bounded


def _key_check(api_key: str | None):  # noqa: ANN202 - a FastAPI dependency
    expected = api_key.encode("utf-8") if api_key else None

    async def check(request: Request) -> None:
        if expected is None or request.url.path in OPEN_PATHS:
            return
        given = request.headers.get("x-api-key", "")
        bearer = request.headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        # compare_digest: the time taken does not reveal how much of a guessed key was right.
        if not hmac.compare_digest(given.encode("utf-8"), expected):
            raise HTTPProblem(401, "missing or wrong API key: send it in the X-API-Key header")

    return check


class _BodyLimit:
    """Refuse bodies over the limit (413) before parsing: the declared length first, then the bytes read.

    Plain ASGI because the limit must hold for chunked bodies too, which declare no length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _reply(scope, receive, send, 400, f"Content-Length {declared!r} is not a number of bytes")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, size)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        message = (
            f"request body of {size}+ bytes; this server's limit is {self.max_bytes} bytes "
            "(--max-body-bytes): send fewer or shorter snippets per request"
        )
        await _reply(scope, receive, send, 413, message)


async def _reply(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await JSONResponse({"detail": message}, status_code=status)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"  # bounded label values
        status = 500
        started = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, str(status)).inc()


def _add_error_handlers(app: FastAPI) -> None:
    async def problem(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, HTTPProblem)
        headers = {"WWW-Authenticate": "ApiKey"} if err.status == 401 else None
        headers = {"Retry-After": str(math.ceil(err.retry_after))} if err.retry_after else headers
        if request.url.path in OPENAI_PATHS:  # OpenAI answers bad input with 400, not 422
            return error_response(400 if err.status == 422 else err.status, err.message, headers=headers)
        return JSONResponse({"detail": err.message}, status_code=err.status, headers=headers)

    async def openai_problem(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, APIError)
        return error_response(err.status, err.message, err.param, err.code)

    async def invalid(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        if request.url.path in OPENAI_PATHS:
            return validation_error(err)
        return JSONResponse({"detail": _validation_message(err)}, status_code=422)

    app.add_exception_handler(HTTPProblem, problem)
    app.add_exception_handler(APIError, openai_problem)
    app.add_exception_handler(RequestValidationError, invalid)


def _validation_message(err: RequestValidationError) -> str:
    """One line per problem, each naming the field as a client wrote it (snippets[2], pairs[0].a)."""
    lines = []
    for problem in err.errors():
        location = [str(p) for p in problem.get("loc", ()) if p != "body"]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in location).lstrip(".") or "body"
        kind = problem.get("type", "")
        if kind == "json_invalid":  # _BoundedJsonRequest's message, whole
            lines.append(problem.get("ctx", {}).get("error", "the body is not valid JSON"))
        elif kind == "extra_forbidden":
            lines.append(f"{where}: unknown field; see GET /v1/tasks and docs/serving.md")
        else:
            lines.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(lines)
