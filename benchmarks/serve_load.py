"""Load test of `mtpeft serve` on loopback: throughput, latency, errors and memory, batching on vs off.

For each client count (`--clients 32` or `--clients 32,64`) it measures two settings, each in a freshly
started `mtpeft serve RUN_DIR --port 0` subprocess on 127.0.0.1, same run, same clients, same request mix:

  batching on    the default: concurrent requests gathered into shared backbone passes
  batching off   `--no-batching`: one backbone pass per request

Per setting: start the server and wait for its "serving on" line; then N concurrent async clients
(httpx, one keep-alive connection each, one asyncio process) load it without a break for
`--warmup-seconds` + `--seconds`, each drawing from a seeded mix of valid requests (/v1/analyze with 1
real standard-library function, sometimes 2-4; /v1/analyze with pairs when the run has a pair task;
/v1/embed) and, with probability `--invalid-share`, invalid ones (malformed JSON, an unknown field, a
wrong type, too many snippets, an oversized body, an unknown task), which must all get a 4xx. At the end
of the warm-up and of the measured window (while the clients keep going) it reads the server's resident
memory (RSS), both processes' CPU time and /metrics (backbone passes, requests per batch): throughput
and latency count the answers that came within the window, statuses every answer after the warm-up
(requests still in flight at the end finish and are checked, not timed).

Reported per setting: valid requests/s and snippets/s (a pair counts two), valid-request latency
p50/p95/p99, 5xx among valid requests, status codes per invalid kind (any invalid request answered 2xx
or 5xx is a failure), RSS after warm-up and at the end, backbone passes, mean requests per batch, and
the CPU seconds of the server and of this client process (if the client uses most of a core it may be
the bottleneck: the numbers are then a lower bound). Targets: speed-up (batching-on ÷ batching-off
valid requests/s) >= 3 at 32 clients, 0 5xx among valid requests, RSS end ÷ after-warm-up <= 1.10.

    .venv/bin/python benchmarks/serve_load.py [RUN_DIR] [--clients 32] [--seconds 30] [--warmup-seconds 5]

Without RUN_DIR it uses the small minilm run of benchmarks/inference_all_tasks.py (4 one-snippet heads,
a clone pair head, a code-search head) in --workspace (workspace/default-benchmark, as in the README),
training it there first only when no finished one with the same settings exists. Expected duration with the
defaults, per client count: 2 x (server start ~10-20 s + 5 s warm-up + 30 s load + shutdown) ~= 1.5-2
min, plus ~10-30 s to extract the standard library's functions once (and training, without RUN_DIR).
Run it on a quiet machine: the clients and the server share its cores. Writes
benchmarks/results/serve_load-<model>.json (or --out), prints a table; exits 1 if a server crashed (or
failed to start, stopped answering, or did not stop on SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
READY = re.compile(r"serving on (http://\S+)")
TARGET_SPEEDUP, TARGET_SPEEDUP_CLIENTS, TARGET_MEMORY_RATIO = 3.0, 32, 1.10
REQUEST_TIMEOUT_S = 120.0
CLEAN_EXIT_CODES = (0, 130, -signal.SIGINT)  # after SIGINT: typer exits 130 on KeyboardInterrupt
JSON_HEADERS = {"content-type": "application/json"}
SHORT_SNIPPET = "def f(x):\n    return x + 1\n"

# Invalid request kinds and the status each should get (every one must at least be a 4xx).
EXPECTED_STATUS = {
    "malformed_json": 422,
    "unknown_field": 422,
    "wrong_type": 422,
    "too_many_snippets": 413,
    "oversized_body": 413,
    "unknown_task": 422,
}
INVALID_KINDS = tuple(EXPECTED_STATUS)
# Relative weights of the valid kinds (those the run cannot answer are left out).
VALID_WEIGHTS = {"analyze_1": 5.0, "analyze_2to4": 2.0, "analyze_pairs": 1.5, "embed": 1.5}


class ServerFailed(RuntimeError):
    """The server died, did not start in time, or stopped answering."""


# ---- what the server is told (and the benchmark therefore knows) ---------------------------------------
@dataclass(frozen=True)
class ServerOptions:
    max_body_bytes: int = 262_144
    max_snippets: int = 16
    max_chars: int = 20_000
    batch_wait_ms: float = 5.0
    batch_snippets: int = 64
    batch_tokens: int = 16_384
    pass_tokens: int = 1024
    max_queue: int = 1024
    device: str | None = None

    def flags(self, batching: bool) -> list[str]:
        flags = [
            "--max-body-bytes", str(self.max_body_bytes),
            "--max-snippets", str(self.max_snippets),
            "--max-chars", str(self.max_chars),
            "--batching" if batching else "--no-batching",
            "--batch-wait-ms", str(self.batch_wait_ms),
            "--batch-snippets", str(self.batch_snippets),
            "--batch-tokens", str(self.batch_tokens),
            "--pass-tokens", str(self.pass_tokens),
            "--max-queue", str(self.max_queue),
        ]  # fmt: skip
        return flags + (["--device", self.device] if self.device else [])


# ---- the request mix ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    kind: str
    valid: bool
    path: str
    body: bytes
    texts: int = 0  # texts the model encodes (a pair counts two); 0 for invalid requests
    answer_key: str = ""  # valid: the reply field holding one answer per item
    answers: int = 0  # valid: how many answers that field must hold


@dataclass(frozen=True)
class RunTasks:
    """What the served run can answer, from GET /v1/tasks."""

    snippet: list[str]
    pair: list[str]
    retrieval: list[str]

    @classmethod
    def from_listing(cls, listing: dict[str, Any]) -> RunTasks:
        tasks = listing["runs"][0]["tasks"]

        def named(*kinds: str) -> list[str]:
            return [t["name"] for t in tasks if t["kind"] in kinds]

        return cls(named("binary", "multiclass"), named("pair"), named("retrieval"))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


class RequestMix:
    """Deterministic requests: the same seed gives the same sequence (bodies built from `functions`)."""

    def __init__(
        self, functions: Sequence[str], tasks: RunTasks, options: ServerOptions, invalid_share: float
    ) -> None:
        if not functions:
            raise ValueError("the request mix needs at least one function")
        self.functions, self.invalid_share = list(functions), invalid_share
        allowed = {
            "analyze_1": bool(tasks.snippet),
            "analyze_2to4": bool(tasks.snippet),
            "analyze_pairs": bool(tasks.pair),
            "embed": True,  # pooled vectors when the run has no retrieval task
        }
        self.valid_kinds = [kind for kind in VALID_WEIGHTS if allowed[kind]]
        self.weights = [VALID_WEIGHTS[kind] for kind in self.valid_kinds]
        self.invalid = {kind: self._invalid(kind, options) for kind in INVALID_KINDS}

    def draw(self, rng: random.Random) -> Request:
        if rng.random() < self.invalid_share:
            return self.invalid[rng.choice(INVALID_KINDS)]
        kind = rng.choices(self.valid_kinds, self.weights)[0]
        return self._valid(kind, rng)

    def _pick(self, rng: random.Random, count: int) -> list[str]:
        return [self.functions[rng.randrange(len(self.functions))] for _ in range(count)]

    def _valid(self, kind: str, rng: random.Random) -> Request:
        if kind == "analyze_pairs":
            codes = self._pick(rng, 2 * rng.randint(1, 2))
            pairs = [{"a": a, "b": b} for a, b in zip(codes[::2], codes[1::2], strict=True)]
            return Request(
                kind, True, "/v1/analyze", _json({"pairs": pairs}), len(codes), "pairs", len(pairs)
            )
        count = {"analyze_1": 1, "analyze_2to4": rng.randint(2, 4), "embed": rng.randint(1, 2)}[kind]
        codes = self._pick(rng, count)
        if kind == "embed":
            return Request(kind, True, "/v1/embed", _json({"snippets": codes}), count, "vectors", count)
        return Request(kind, True, "/v1/analyze", _json({"snippets": codes}), count, "snippets", count)

    def _invalid(self, kind: str, options: ServerOptions) -> Request:
        code = self.functions[0]
        bodies = {
            "malformed_json": b'{"snippets": ["def f(): pass"',
            "unknown_field": _json({"snippets": [code], "snipets": [code]}),
            "wrong_type": _json({"snippets": code}),  # a string where a list belongs
            "too_many_snippets": _json({"snippets": [SHORT_SNIPPET] * (options.max_snippets + 1)}),
            "oversized_body": oversized_body(options),
            "unknown_task": _json({"snippets": [code], "tasks": ["no-such-task"]}),
        }
        return Request(kind, False, "/v1/analyze", bodies[kind])


def oversized_body(options: ServerOptions) -> bytes:
    """A body over --max-body-bytes that is otherwise within limits when they allow (count, characters)."""
    count = options.max_snippets
    length = options.max_body_bytes // count + 64
    line = "    total = total + 1\n"
    snippet = "def f(total):\n" + line * (length // len(line) + 1)
    return _json({"snippets": [snippet] * count})


def usable_functions(functions: Sequence[str], options: ServerOptions, max_per_request: int = 4) -> list[str]:
    """Functions a valid request may carry: within --max-chars, not blank, and 4 of them within the body."""
    budget = options.max_body_bytes // (max_per_request + 1)
    return [f for f in functions if f.strip() and len(f) <= options.max_chars and len(_json(f)) <= budget]


# ---- the clients ----------------------------------------------------------------------------------------
@dataclass
class Record:
    kind: str
    valid: bool
    status: int  # 0: no HTTP answer (connection error, timeout)
    seconds: float
    texts: int
    end: float = 0.0  # time.perf_counter() when the answer came
    error: str = ""  # transport error, a valid reply of the wrong shape, an error without "detail"


def check_reply(request: Request, status: int, content: bytes) -> str:
    """'' when the reply is what the request should get in shape (the status is judged later)."""
    try:
        body = json.loads(content)
    except ValueError:
        return "reply is not JSON"
    if request.valid and status == 200:
        got = body.get(request.answer_key) if isinstance(body, dict) else None
        if not isinstance(got, list) or len(got) != request.answers:
            return f"expected {request.answers} {request.answer_key!r}"
        return ""
    if status >= 400 and not (isinstance(body, dict) and isinstance(body.get("detail"), str)):
        return "error reply without a 'detail' string"
    return ""


async def send(client: httpx.AsyncClient, request: Request) -> Record:
    started = time.perf_counter()
    try:
        reply = await client.post(request.path, content=request.body, headers=JSON_HEADERS)
    except httpx.HTTPError as err:
        end, error = time.perf_counter(), f"{type(err).__name__}: {err}"[:200]
        return Record(request.kind, request.valid, 0, end - started, request.texts, end, error)
    end = time.perf_counter()
    error = check_reply(request, reply.status_code, reply.content)
    return Record(request.kind, request.valid, reply.status_code, end - started, request.texts, end, error)


async def client_loop(
    client: httpx.AsyncClient, mix: RequestMix, rng: random.Random, until: float, alive: Callable[[], bool]
) -> list[Record]:
    records = []
    while time.perf_counter() < until:
        records.append(await send(client, mix.draw(rng)))
        if records[-1].status == 0 and not alive():
            break  # the server died: do not spin on refused connections
    return records


# ---- the server process ---------------------------------------------------------------------------------
class Server:
    """`mtpeft serve` in a subprocess on 127.0.0.1, port 0; always stopped by `stop` (or on exit)."""

    def __init__(self, run_dir: Path, options: ServerOptions, batching: bool, log: Path) -> None:
        self.command = [sys.executable, "-m", "mtpeft.cli.main", "serve", str(run_dir)]
        self.command += ["--host", "127.0.0.1", "--port", "0", *options.flags(batching)]
        self.log = log
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.stopped_by = ""  # the last signal `stop` had to send

    def __enter__(self) -> Server:
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # loopback only
        with open(self.log, "w", encoding="utf-8") as stderr:
            self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = READY.search(self.log_text())
            if found:
                return found.group(1)
            self.check_alive("while starting")
            time.sleep(0.2)
        raise ServerFailed(f"mtpeft serve did not start within {timeout:.0f} s:\n{self.log_tail()}")

    def check_alive(self, when: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServerFailed(
                f"mtpeft serve exited with {self.process.returncode} {when}:\n{self.log_tail()}"
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss(self) -> int:
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (uvicorn's graceful shutdown), then SIGTERM, then SIGKILL; the exit code."""
        process = self.process
        if process is None or self.returncode is not None:
            return self.returncode
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            if process.poll() is not None:
                break
            self.stopped_by = sig.name
            process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
        self.returncode = process.poll()
        return self.returncode

    @property
    def clean_exit(self) -> bool:
        """Stopped by the first SIGINT, exiting 0, 130 (the CLI's "interrupted") or by the signal."""
        return self.stopped_by == "SIGINT" and self.returncode in CLEAN_EXIT_CODES

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def get_json(base_url: str, path: str) -> Any:
    reply = httpx.get(f"{base_url}{path}", timeout=30)
    reply.raise_for_status()
    return reply.json() if path != "/metrics" else reply.text


# ---- /metrics -------------------------------------------------------------------------------------------
def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def metric_total(samples: list[tuple[str, dict[str, str], float]], name: str, **where: str) -> float:
    """Sum of a sample name's values over its labels (those matching `where`; prefixes end with '*')."""

    def matches(labels: dict[str, str]) -> bool:
        for key, want in where.items():
            value = labels.get(key, "")
            if not (value.startswith(want[:-1]) if want.endswith("*") else value == want):
                return False
        return True

    return sum(value for sample, labels, value in samples if sample == name and matches(labels))


def batching_stats(before: str, after: str) -> dict[str, Any]:
    """What the server did between two scrapes: backbone passes, batches and their mean sizes."""
    b, a = metric_samples(before), metric_samples(after)

    def delta(name: str, **where: str) -> float:
        return metric_total(a, name, **where) - metric_total(b, name, **where)

    batches = delta("mtpeft_batch_requests_count")
    return {
        "backbone_passes": delta("mtpeft_backbone_passes_total"),
        "backbone_rows": delta("mtpeft_backbone_rows_total"),
        "batches": batches,
        "mean_requests_per_batch": delta("mtpeft_batch_requests_sum") / batches if batches else None,
        "mean_snippets_per_batch": delta("mtpeft_batch_snippets_sum") / batches if batches else None,
        "model_seconds": delta("mtpeft_batch_seconds_sum"),
        "server_counted_5xx": delta("mtpeft_requests_total", status="5*"),
    }


# ---- summaries ------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between the closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise_valid(records: list[Record], start: float, end: float) -> dict[str, Any]:
    """Throughput and latency from the answers that came within [start, end); statuses from all."""
    valid = [r for r in records if r.valid]
    done = [r for r in valid if r.status == 200 and not r.error and start <= r.end < end]
    latencies, seconds = [r.seconds * 1000 for r in done], end - start
    return {
        "answered": len(valid),  # after the warm-up, the requests in flight at the end included
        "completed": len(done),
        "not_ok": sum(1 for r in valid if r.status != 200 or r.error),
        "requests_per_s": len(done) / seconds,
        "snippets_per_s": sum(r.texts for r in done) / seconds,
        "latency_ms": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)}
        | {
            "mean": sum(latencies) / len(latencies) if latencies else None,
            "max": max(latencies, default=None),
        },
        "by_kind": dict(Counter(r.kind for r in done)),
        "status_counts": {str(k): v for k, v in sorted(Counter(r.status for r in valid).items())},
        "5xx": sum(1 for r in valid if r.status >= 500),
        "transport_errors": sum(1 for r in valid if r.status == 0),
        "bad_replies": sum(1 for r in valid if r.status == 200 and r.error),
        "errors": dict(Counter(r.error for r in valid if r.error).most_common(5)),
    }


def summarise_invalid(records: list[Record]) -> dict[str, Any]:
    """Per invalid kind: statuses got; a 2xx, 5xx or no answer is a failure; another 4xx is noted."""
    invalid = [r for r in records if not r.valid]
    by_kind = {}
    for kind in INVALID_KINDS:
        mine = [r for r in invalid if r.kind == kind]
        by_kind[kind] = {
            "requests": len(mine),
            "expected_status": EXPECTED_STATUS[kind],
            "status_counts": {str(k): v for k, v in sorted(Counter(r.status for r in mine).items())},
            "all_4xx": all(400 <= r.status < 500 for r in mine),
            "failures": sum(1 for r in mine if not 400 <= r.status < 500),
            "other_4xx": sum(1 for r in mine if 400 <= r.status < 500 and r.status != EXPECTED_STATUS[kind]),
            "errors": dict(Counter(r.error for r in mine if r.error).most_common(3)),
        }
    failures = sum(k["failures"] for k in by_kind.values())
    latencies = [r.seconds * 1000 for r in invalid]  # refused before the model: should stay short
    return {
        "sent": len(invalid),
        "failures": failures,
        "all_4xx": failures == 0,
        "latency_ms": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)},
        "by_kind": by_kind,
    }


# ---- one setting ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    run_dir: Path
    functions: list[str]
    options: ServerOptions
    invalid_share: float
    seconds: float
    warmup_seconds: float
    seed: int
    start_timeout: float
    logs: Path
    requests_out: Path | None = None  # every measured request, one JSON line each
    listing: dict[str, Any] | None = field(default=None)  # GET /v1/tasks of the first server

    @property
    def tasks(self) -> RunTasks | None:
        return RunTasks.from_listing(self.listing) if self.listing else None

    def run_facts(self) -> dict[str, Any]:
        if not self.listing:
            return {}
        run = self.listing["runs"][0]
        facts = {key: run.get(key) for key in ("run_id", "model", "method", "device")}
        return facts | {"tasks": {t["name"]: t["kind"] for t in run["tasks"]}}


@dataclass
class Probe:
    """The server's state at one moment of the load (read while the clients keep going)."""

    at: float
    rss: int
    server_cpu: float
    client_cpu: float
    metrics: str


async def probe_at(when: float, server: Server, client: httpx.AsyncClient, what: str) -> Probe:
    await asyncio.sleep(max(0.0, when - time.perf_counter()))
    server.check_alive(what)
    at, own = time.perf_counter(), psutil.Process().cpu_times()
    rss, server_cpu = server.rss(), server.cpu_seconds()
    reply = await client.get("/metrics")
    reply.raise_for_status()
    return Probe(at, rss, server_cpu, own.user + own.system, reply.text)


async def drive(
    base_url: str, server: Server, plan: Plan, clients: int
) -> tuple[dict[str, Any], list[Record]]:
    """One continuous load: warm-up, then the measured window, probed at both ends; the clients keep
    their connections throughout, and what they have in flight at the end finishes (checked, not timed)."""
    tasks = plan.tasks
    assert tasks is not None
    mix = RequestMix(plan.functions, tasks, plan.options, plan.invalid_share)
    rngs = [random.Random(plan.seed * 100_003 + i) for i in range(clients)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S)
            )
            for _ in range(clients + 1)  # the last one reads /metrics
        ]
        begin = time.perf_counter()
        start, end = begin + plan.warmup_seconds, begin + plan.warmup_seconds + plan.seconds
        loops = [client_loop(c, mix, rng, end, server.alive) for c, rng in zip(pool, rngs, strict=False)]
        load = asyncio.gather(*loops)
        try:
            first = await probe_at(start, server, pool[-1], "during the warm-up")
            last = await probe_at(end, server, pool[-1], "during the load")
            per_client = await load
        finally:
            load.cancel()  # only does something if a probe failed
            with contextlib.suppress(asyncio.CancelledError):
                await load
        server.check_alive("after the load")
    records = [r for rs in per_client for r in rs]
    return summarise_setting(records, first, last), records


def summarise_setting(records: list[Record], first: Probe, last: Probe) -> dict[str, Any]:
    seconds = last.at - first.at
    measured = [r for r in records if r.end >= first.at]  # answered after the warm-up
    warmup = [r for r in records if r.end < first.at]
    return {
        "seconds": seconds,
        "warmup": {
            "requests": len(warmup),
            "valid_5xx": sum(1 for r in warmup if r.valid and r.status >= 500),
            "invalid_failures": sum(1 for r in warmup if not r.valid and not 400 <= r.status < 500),
        },
        "valid": summarise_valid(measured, first.at, last.at),
        "invalid": summarise_invalid(measured),
        "memory": {
            "rss_after_warmup_bytes": first.rss,
            "rss_end_bytes": last.rss,
            "ratio": last.rss / first.rss,
        },
        "metrics": batching_stats(first.metrics, last.metrics),
        "cpu": {
            "client_seconds": last.client_cpu - first.client_cpu,
            "client_share_of_one_core": (last.client_cpu - first.client_cpu) / seconds,
            "server_seconds": last.server_cpu - first.server_cpu,
            "server_cores_busy": (last.server_cpu - first.server_cpu) / seconds,
        },
    }


def run_setting(plan: Plan, clients: int, batching: bool) -> dict[str, Any]:
    """One fresh server, loaded; never returns with the server still running."""
    name = f"{'batching' if batching else 'no-batching'}-{clients}"
    result: dict[str, Any] = {"clients": clients, "batching": batching, "crashed": False}
    server = Server(plan.run_dir, plan.options, batching, plan.logs / f"serve-{name}.log")
    print(f"[{name}] starting the server ...", file=sys.stderr)
    with server:
        try:
            base_url = server.wait_ready(plan.start_timeout)
            if plan.listing is None:
                plan.listing = get_json(base_url, "/v1/tasks")
            print(
                f"[{name}] {base_url}: {plan.warmup_seconds:g} s warm-up + {plan.seconds:g} s load",
                file=sys.stderr,
            )
            summary, records = asyncio.run(drive(base_url, server, plan, clients))
            result |= summary
            if plan.requests_out is not None:
                save_records(plan.requests_out, name, records)
        except ServerFailed as err:
            result |= {"crashed": True, "error": str(err)}
        except (psutil.NoSuchProcess, httpx.HTTPError) as err:  # the server died between two checks
            exit_code = server.process.poll() if server.process else None
            died = f"mtpeft serve exited with {exit_code}; " if exit_code is not None else ""
            error = f"{died}{type(err).__name__}: {err}\n{server.log_tail()}"
            result |= {"crashed": exit_code is not None, "error": error}
    if "error" in result:
        print(f"[{name}] FAILED: {result['error']}", file=sys.stderr)
    result["server_exit_code"] = server.returncode
    result["server_stopped_by"] = server.stopped_by
    result["clean_shutdown"] = server.clean_exit
    result["server_command"] = server.command
    if result["crashed"] or not result["clean_shutdown"]:
        result["server_log_tail"] = server.log_tail()
    return result


def save_records(path: Path, setting: str, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps({"setting": setting, **asdict(record)}) + "\n")


# ---- the whole benchmark --------------------------------------------------------------------------------
def speedups(settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batching-on ÷ batching-off valid requests/s per client count (both settings must have run)."""
    out = []
    for clients in sorted({s["clients"] for s in settings}):
        rate = {
            s["batching"]: s["valid"]["requests_per_s"]
            for s in settings
            if s["clients"] == clients and "valid" in s
        }
        if True in rate and False in rate:
            ratio = rate[True] / rate[False] if rate[False] else None
            out.append(
                {
                    "clients": clients,
                    "batching_on_rps": rate[True],
                    "batching_off_rps": rate[False],
                    "speedup": ratio,
                }
            )
    return out


def targets(settings: list[dict[str, Any]], ups: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [s for s in settings if "valid" in s]
    at = next((u for u in ups if u["clients"] == TARGET_SPEEDUP_CLIENTS), None)
    speedup = at["speedup"] if at else None
    fivexx = sum(s["valid"]["5xx"] + s["warmup"]["valid_5xx"] for s in measured)
    ratios = [s["memory"]["ratio"] for s in measured]
    invalid_failures = sum(s["invalid"]["failures"] + s["warmup"]["invalid_failures"] for s in measured)
    complete = bool(measured) and len(measured) == len(settings)
    return {
        f"speedup_at_{TARGET_SPEEDUP_CLIENTS}_clients": {
            "target": f">= {TARGET_SPEEDUP}",
            "value": speedup,
            "met": None if speedup is None else speedup >= TARGET_SPEEDUP,
        },
        "valid_5xx": {"target": "0", "value": fivexx, "met": complete and fivexx == 0},
        "memory_end_over_warmup": {
            "target": f"<= {TARGET_MEMORY_RATIO}",
            "value": max(ratios, default=None),
            "met": complete and all(r <= TARGET_MEMORY_RATIO for r in ratios),
        },
        "invalid_all_4xx": {
            "target": "every invalid request 4xx",
            "value": invalid_failures,
            "met": complete and invalid_failures == 0,
        },
    }


def parse_clients(text: str) -> list[int]:
    """'32' or '32,64' -> [32] or [32, 64] (each at least 1, duplicates dropped, order kept)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients takes counts like 32 or 32,64, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--clients takes counts of at least 1, not {text!r}")
    return list(dict.fromkeys(counts))


def inference_benchmark() -> ModuleType:
    """benchmarks/inference_all_tasks.py (train_default_run, sample_functions), imported by path."""
    spec = importlib.util.spec_from_file_location(
        "inference_all_tasks", BENCHMARKS / "inference_all_tasks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished_default_run(workspace: Path, model: str, heads: int, steps: int, max_length: int) -> Path | None:
    """A run train_default_run already made with these settings (it would delete and retrain it)."""
    import yaml

    for run_dir in sorted((workspace / "runs").glob(f"inference-bench-{heads}heads-*")):
        config_file, manifest = run_dir / "config.yaml", run_dir / "best" / "MANIFEST.json"
        if not (config_file.is_file() and manifest.is_file()):
            continue
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        lengths = {task.get("max_length") for task in config.get("tasks", [])}
        if config.get("model") == model and config.get("max_steps") == steps and lengths == {max_length}:
            return run_dir
    return None


def default_run(bench: ModuleType, args: argparse.Namespace) -> Path:
    settings = (args.workspace, args.model, args.heads, args.steps, args.max_length)
    found = finished_default_run(*settings)
    if found is not None:
        print(f"reusing {found}", file=sys.stderr)
        return found
    return bench.train_default_run(*settings)


def machine() -> dict[str, Any]:
    import torch  # already imported by inference_all_tasks; the server's default thread count

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "memory_bytes": psutil.virtual_memory().total,
    }


COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("clients", "d", lambda s: s["clients"]),
    ("batching", "s", lambda s: "on" if s["batching"] else "off"),
    ("req/s", ".1f", lambda s: s["valid"]["requests_per_s"]),
    ("snip/s", ".1f", lambda s: s["valid"]["snippets_per_s"]),
    ("p50ms", ".1f", lambda s: s["valid"]["latency_ms"]["p50"]),
    ("p95ms", ".1f", lambda s: s["valid"]["latency_ms"]["p95"]),
    ("p99ms", ".1f", lambda s: s["valid"]["latency_ms"]["p99"]),
    ("5xx", "d", lambda s: s["valid"]["5xx"]),
    ("!ok", "d", lambda s: s["valid"]["not_ok"]),
    ("inv!4xx", "d", lambda s: s["invalid"]["failures"]),
    ("RSS MiB", ".0f", lambda s: s["memory"]["rss_after_warmup_bytes"] / 2**20),
    ("end/wu", ".3f", lambda s: s["memory"]["ratio"]),
    ("passes", ".0f", lambda s: s["metrics"]["backbone_passes"]),
    ("req/b", ".1f", lambda s: s["metrics"]["mean_requests_per_batch"]),
    ("cli%", ".0f", lambda s: 100 * s["cpu"]["client_share_of_one_core"]),
]


def model_ceiling(
    run_dir: Path, functions: list[str], pass_tokens: int, device: str | None
) -> dict[str, Any]:
    """The most micro-batching can gain on this machine: the backbone alone, no server, on the same
    functions, one per pass vs length-sorted passes of `pass_tokens` (what the server does with a full
    queue). Measured in this process before any server starts, so nothing else shares the cores."""
    import mtpeft

    run = mtpeft.load(run_dir, device=device, batch_size=1)
    run.analyze(functions[:8])  # warm-up
    timings = {}
    for name, batch_size, budget in (("one_per_pass", 1, None), ("length_batched", 64, pass_tokens)):
        run.batch_size, run.max_batch_tokens = batch_size, budget
        started = time.perf_counter()
        run.analyze(functions)
        timings[name] = time.perf_counter() - started
    return {
        "functions": len(functions),
        "seconds": timings,
        "snippets_per_s": {name: len(functions) / seconds for name, seconds in timings.items()},
        "speedup": timings["one_per_pass"] / timings["length_batched"],
    }


def summary_table(settings: list[dict[str, Any]]) -> str:
    rows = [" ".join(f"{name:>8}" for name, _, _ in COLUMNS)]
    for s in settings:
        if "valid" not in s:
            error = " ".join(s.get("error", "").splitlines()[:1])[:80]
            rows.append(f"{s['clients']:>8} {'on' if s['batching'] else 'off':>8} FAILED: {error}")
            continue
        cells = [(value(s), spec) for _, spec, value in COLUMNS]
        rows.append(" ".join(f"{v:>8{spec}}" if v is not None else f"{'-':>8}" for v, spec in cells))
    return "\n".join(rows)


def print_summary(result: dict[str, Any]) -> None:
    print(summary_table(result["settings"]))
    print(
        "(req/s, snip/s: valid requests answered 200 and their snippets per second; !ok: valid requests "
        "not answered 200; inv!4xx: invalid requests not answered 4xx; end/wu: RSS end / after warm-up; "
        "req/b: requests per batch; cli%: this client's CPU, % of one core)"
    )
    for up in result["speedups"]:
        shown = f"{up['speedup']:.2f}x" if up["speedup"] is not None else "n/a"
        rates = f"batching on {up['batching_on_rps']:.1f} vs off {up['batching_off_rps']:.1f} valid req/s"
        print(f"speed-up at {up['clients']} clients: {shown} ({rates})")
    for name, target in result["targets"].items():
        mark = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        print(f"target {name} {target['target']}: {target['value']} -> {mark}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="A trained run (default: train a small one).")
    parser.add_argument(
        "--clients", type=parse_clients, default=[32], help="Concurrent clients: 32 or 32,64."
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="Measured load per setting.")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--invalid-share", type=float, default=0.2, help="Share of invalid requests.")
    parser.add_argument("--functions", type=int, default=512, help="Standard-library functions to send.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="The server's --device (default: its own choice).")
    parser.add_argument("--batch-wait-ms", type=float, default=ServerOptions.batch_wait_ms)
    parser.add_argument("--pass-tokens", type=int, default=ServerOptions.pass_tokens)
    parser.add_argument("--start-timeout", type=float, default=300.0, help="Seconds to wait for a server.")
    inference_benchmark().add_default_run_arguments(parser)
    parser.add_argument("--workspace", type=Path, default=Path("workspace/default-benchmark"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--requests-out", type=Path, default=None, help="Also write every measured request (JSON lines)."
    )
    args = parser.parse_args()
    if not 0 <= args.invalid_share <= 1:
        parser.error("--invalid-share must be between 0 and 1")
    return args


def main() -> int:
    args = parse_args()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    bench = inference_benchmark()
    run_dir = args.run_dir or default_run(bench, args)
    options = ServerOptions(
        batch_wait_ms=args.batch_wait_ms, pass_tokens=args.pass_tokens, device=args.device
    )
    print(f"extracting {args.functions} standard-library functions ...", file=sys.stderr)
    functions = usable_functions(bench.sample_functions(bench.stdlib_root(), args.functions), options)
    facts = machine()  # before the load: the load average says how quiet the machine was
    print("timing the backbone alone (the ceiling of any batching gain) ...", file=sys.stderr)
    ceiling = model_ceiling(Path(run_dir), functions, options.pass_tokens, args.device)
    settings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as logs:
        plan = Plan(
            Path(run_dir),
            functions,
            options,
            args.invalid_share,
            args.seconds,
            args.warmup_seconds,
            args.seed,
            args.start_timeout,
            Path(logs),
            requests_out=args.requests_out,
        )
        if args.requests_out is not None:
            args.requests_out.unlink(missing_ok=True)
        for clients in args.clients:
            for batching in (True, False):
                settings.append(run_setting(plan, clients, batching))
    ups = speedups(settings)
    result = {
        "benchmark": "serve_load",
        "started_at": started_at,
        "machine": facts,
        "run": {"run_dir": str(Path(run_dir).resolve()), **plan.run_facts()},
        "server": asdict(options),
        "mix": {
            "invalid_share": args.invalid_share,
            "seed": args.seed,
            "functions": len(functions),
            "valid_weights": VALID_WEIGHTS,
            "invalid_kinds": list(INVALID_KINDS),
            "request_timeout_s": REQUEST_TIMEOUT_S,
        },
        "settings": settings,
        "speedups": ups,
        "model_ceiling": ceiling,
        "targets": targets(settings, ups),
        "crashed": any(s["crashed"] for s in settings),
        "clean_shutdowns": all(s["clean_shutdown"] for s in settings),
    }
    model = Path(result["run"].get("model") or "unknown").name
    out = args.out or RESULTS / f"serve_load-{model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_summary(result)
    c = ceiling["snippets_per_s"]
    print(
        f"backbone alone on {ceiling['functions']} functions: {c['one_per_pass']:.1f} snippets/s one per "
        f"pass, {c['length_batched']:.1f} length-batched: at most {ceiling['speedup']:.2f}x from batching"
    )
    print(f"-> {out}")
    failed = result["crashed"] or not result["clean_shutdowns"] or any("error" in s for s in settings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
