"""Micro-batching: requests from many clients answered together, one backbone pass per gathered batch.

HTTP handlers put a `Job` on a queue and await its future; ONE worker thread owns the model(s). It takes
the first waiting job, keeps gathering for a bounded time while the batch stays under a snippet and a
token budget, then answers the whole batch with the run's one-pass inference path (`Run.analyze`: every
requested task of every snippet from one encode, length-grouped; `Run.embed` and `Run.compare` for their
jobs). One thread means one forward at a time, which is also what makes switching a shared backbone's
adapter per run safe (mtpeft/modeling/shared_base.py).

Written here because the adapter servers (vLLM, LoRAX, S-LoRA) batch token generation, not several
classification heads over one pooled pass; the gathering loop is small and its bounds are the point.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mtpeft.errors import MtpeftError
from mtpeft.serve.memory import heap_trimmer
from mtpeft.serve.settings import Batching

if TYPE_CHECKING:
    from mtpeft.api import Run

log = logging.getLogger("mtpeft.serve")

Op = Literal["analyze", "embed", "compare", "generate"]


class ServerBusy(Exception):
    """The queue is full: the client should retry later (HTTP 429)."""


class Abandoned(Exception):
    """Nobody waits for this job any more (its client left or its wait ran out): not computed."""

    def __init__(self) -> None:
        super().__init__("Nobody waits for this request any more (its client left): not computed")


class ServerStopping(Exception):
    """The server is shutting down: a queued job is refused instead of answered (HTTP 503)."""

    def __init__(self) -> None:
        super().__init__("the server is stopping; retry once it is back")


@dataclass
class Job:
    """One request's inference, validated by the handler before it is queued."""

    run: str
    op: Op
    texts: list[str]  # analyze/embed: the snippets or queries; compare: the a sides
    tasks: list[str] = field(default_factory=list)  # analyze: the tasks asked for; embed/compare: one
    others: list[str] = field(default_factory=list)  # compare: the b sides
    query: bool = False  # embed: natural-language queries
    max_new_tokens: int | None = None  # generate: tokens per reply (None: the task's max_target_length)
    tokens: int = 0  # estimated tokens, for the batch budget
    future: Future = field(default_factory=Future)
    # Set by the handler when nobody waits any more (client gone, request timed out): a job still queued
    # is cancelled through its future instead; this flag drops one already taken into a batch.
    abandoned: bool = False

    @property
    def snippets(self) -> int:
        return len(self.texts) + len(self.others)


@dataclass
class BatchStats:
    requests: int
    snippets: int
    seconds: float


class MicroBatcher:
    """A worker thread answering queued jobs in gathered batches; see the module docstring."""

    def __init__(
        self,
        runs: dict[str, Run],
        batching: Batching,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.runs = runs
        self.batching = batching
        self.on_batch = on_batch
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=batching.max_queue)
        self._carry: Job | None = None  # a job that did not fit the last batch: first of the next
        self._current: list[Job] = []  # the batch being answered: refused too if stopped mid-batch
        self._thread = threading.Thread(target=self._work, name="mtpeft-inference", daemon=True)
        self._stopping = threading.Event()
        self._trim = heap_trimmer()  # memory.py: RSS stays flat under varied batch shapes

    # ---- the handlers' side ---------------------------------------------------------------------------
    def start(self) -> None:
        """Answer jobs on a thread of its own (in-process apps, tests). A server should prefer
        `run_forever()` on the main thread: see there."""
        self._thread.start()

    def run_forever(self) -> None:
        """Answer jobs on the calling thread until stop().

        Why the main thread: torch's OpenMP pool belongs to the thread that first ran a parallel op (the
        main thread, which loaded the model). Ops started from another thread then pay for a second pool
        fighting the first: measured on 2 cores, one minilm forward took 31 ms from a worker thread vs 18
        ms from the main thread, and a small elementwise op 160 us vs 12 us. So `mtpeft serve` runs HTTP
        on a thread and the model here.
        """
        self._work()

    def stop(self, timeout: float = 10.0) -> int:
        """Stop answering; every job not answered yet (queued, or in a batch the stop interrupted) is
        refused with ServerStopping, so its handler answers at once. Returns how many were refused."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wake the worker
        if self._thread.is_alive():
            self._thread.join(timeout)
        return self._refuse_unanswered()

    def submit(self, job: Job) -> Future:
        if self._stopping.is_set():
            raise ServerStopping
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ServerBusy(
                f"{self.batching.max_queue} requests are already waiting (--max-queue); retry shortly"
            ) from None
        if self._stopping.is_set():  # stop() may have drained the queue between the check and the put
            _settle(job.future, error=ServerStopping())
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _refuse_unanswered(self) -> int:
        jobs, self._current, self._carry = [*self._current, *([self._carry] if self._carry else [])], [], None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                jobs.append(job)
        return sum(_settle(job.future, error=ServerStopping()) for job in jobs if not job.abandoned)

    # ---- the worker's side ----------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            batch = self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            self._answer(batch)
            self._current = []
            if self._trim is not None:
                self._trim()
            if self.on_batch is not None:
                seconds = time.perf_counter() - started
                self.on_batch(BatchStats(len(batch), sum(j.snippets for j in batch), seconds))

    def _gather(self) -> list[Job]:
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None or not _take(first):
            return []
        self._current = batch = [first]  # refused by stop() if a signal interrupts what follows
        snippets, tokens = first.snippets, first.tokens
        if not self.batching.enabled:
            return batch
        deadline = time.perf_counter() + self.batching.max_wait_ms / 1000
        while snippets < self.batching.max_snippets and tokens < self.batching.max_tokens:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                break
            if job.future.cancelled():  # its client gave up while it waited: never computed
                continue
            if (
                snippets + job.snippets > self.batching.max_snippets
                or tokens + job.tokens > self.batching.max_tokens
            ):
                self._carry = job  # too big for this batch: it opens the next one
                break
            if not _take(job):
                continue
            batch.append(job)
            snippets += job.snippets
            tokens += job.tokens
        return batch

    def _answer(self, batch: list[Job]) -> None:
        by_run: dict[str, list[Job]] = defaultdict(list)
        for job in batch:
            by_run[job.run].append(job)
        for run_name, taken in by_run.items():
            jobs = _live(taken)  # clients that gave up since the batch was gathered: their share dropped
            if not jobs:
                continue
            run = self.runs[run_name]
            # Every input of the run's jobs, whatever the endpoint, encoded longest first; the
            # analyze/compare/embed calls below then only read those pooled vectors (and the scratch
            # cache is dropped with the batch, so memory stays flat).
            with run.reusing_encodings():
                try:
                    _encode_in_slices(run, jobs, self.batching.pass_tokens)
                except Exception:  # noqa: BLE001 - bad input: the calls below answer it job by job
                    log.debug("encode_ahead failed; answering the batch's groups without it", exc_info=True)
                for (op, *_), group in _groups(jobs).items():
                    if group := _live(group):
                        self._answer_group(run_name, run, op, group)

    def _answer_group(self, run_name: str, run: Run, op: Op, jobs: list[Job]) -> None:
        try:
            results = _ANSWER[op](run, jobs)
        except Exception:  # noqa: BLE001 - isolate: one bad job must not fail the others
            results = None
        if results is not None:
            for job, result in zip(jobs, results, strict=True):
                _settle(job.future, result)
            return
        for job in jobs:  # the group failed: answer each alone so the error lands on its own job
            try:
                _settle(job.future, _ANSWER[op](run, [job])[0])
            except Exception as err:  # noqa: BLE001 - handed to the waiting handler
                if not isinstance(err, MtpeftError):  # a user's bad input is not a server fault
                    log.exception("inference failed for a %s request on run %s", op, run_name)
                _settle(job.future, error=err)


def _take(job: Job) -> bool:
    """Mark a queued job as being answered; False when its client already gave up (future cancelled).
    From then on the handler cannot cancel the future, only set `abandoned`."""
    return job.future.set_running_or_notify_cancel()


def _live(jobs: list[Job]) -> list[Job]:
    """The jobs someone still waits for; the abandoned ones are settled so no future is left open."""
    for job in jobs:
        if job.abandoned:
            _settle(job.future, error=Abandoned())
    return [job for job in jobs if not job.abandoned]


def _settle(future: Future, result: Any = None, *, error: BaseException | None = None) -> bool:
    """Answer or fail `future` unless it is already done or cancelled (a handler may cancel a queued one,
    and stop() may refuse one, from another thread)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        return False
    return True


GroupKey = tuple[Op, str, bool, int | None]


def _groups(jobs: list[Job]) -> dict[GroupKey, list[Job]]:
    """analyze jobs form ONE group whatever tasks they ask (the union is answered together); embed,
    compare and generate jobs group by task, queries apart from code, replies by their token budget."""
    groups: dict[GroupKey, list[Job]] = defaultdict(list)
    for job in jobs:
        task = "" if job.op == "analyze" else job.tasks[0]
        groups[(job.op, task, job.query, job.max_new_tokens)].append(job)
    return groups


def _inputs_by_limit(run: Run, jobs: list[Job]) -> dict[int, list[str]]:
    """Each job's texts at the token limit(s) its call will truncate them to, for the tasks read from pooled
    vectors (a task through the LM head reads its own prompt: nothing pooled to share)."""
    through_lm = set(run.generation_tasks)
    needs: dict[int, list[str]] = defaultdict(list)
    for job in jobs:
        if job.op == "generate":
            continue
        if job.op == "analyze":
            for limit in {run.token_limit(task) for task in job.tasks if task not in through_lm}:
                needs[limit] += job.texts
        elif job.tasks[0] not in through_lm:
            needs[run.token_limit(job.tasks[0] or None, query=job.query)] += job.texts + job.others
    return needs


def _encode_in_slices(run: Run, jobs: list[Job], budget: int) -> None:
    """`run.encode_ahead` over the jobs' inputs, longest first, about one backbone pass at a time; before
    each slice the inputs of jobs abandoned meanwhile are dropped, so a client that hangs up mid-batch
    stops costing passes within one pass (one encode_ahead call could not be interrupted). Slicing the
    length-sorted inputs by the pass budget gives the same passes one call would."""
    items = [
        (limit, text, job)
        for job in jobs
        for limit, texts in _inputs_by_limit(run, [job]).items()
        for text in texts
    ]
    items.sort(key=lambda item: -min(len(item[1]), 3 * item[0]))
    start = 0
    while start < len(items):
        end, tokens = start, 0
        while end < len(items) and (end == start or tokens + _estimate(*items[end][:2]) <= budget):
            tokens += _estimate(*items[end][:2])
            end += 1
        by_limit: dict[int, list[str]] = defaultdict(list)
        for limit, text, job in items[start:end]:
            if not job.abandoned:
                by_limit[limit].append(text)
        if by_limit:
            run.encode_ahead(by_limit)
        start = end


def _estimate(limit: int, text: str) -> int:
    """Tokens of `text` at `limit`, from characters (about 3 per token in code), as app.py estimates."""
    return min(len(text) // 3 + 2, limit)


def _split(values: Sequence[Any], jobs: list[Job], size: Callable[[Job], int]) -> list[list[Any]]:
    """Cut one flat answer list back into one list per job, in the jobs' order."""
    out, start = [], 0
    for job in jobs:
        out.append(list(values[start : start + size(job)]))
        start += size(job)
    return out


def _analyze(run: Run, jobs: list[Job]) -> list[list[dict]]:
    union = list(dict.fromkeys(task for job in jobs for task in job.tasks))
    answers = run.analyze([text for job in jobs for text in job.texts], tasks=union)
    per_job = _split(answers, jobs, lambda job: len(job.texts))
    return [
        [{task: answer[task] for task in job.tasks} for answer in answers]
        for job, answers in zip(jobs, per_job, strict=True)
    ]


def _embed(run: Run, jobs: list[Job]) -> list[list[list[float]]]:
    texts = [text for job in jobs for text in job.texts]
    vectors = run.embed(texts, task=jobs[0].tasks[0] or None, query=jobs[0].query)
    return _split(vectors.tolist(), jobs, lambda job: len(job.texts))


def _compare(run: Run, jobs: list[Job]) -> list[list[dict]]:
    a = [text for job in jobs for text in job.texts]
    b = [text for job in jobs for text in job.others]
    return _split(run.compare(a, b, task=jobs[0].tasks[0]), jobs, lambda job: len(job.texts))


def _generate(run: Run, jobs: list[Job]) -> list[list[dict[str, Any]]]:
    """Each reply with its token counts, counted here: the tokenizer is only touched on this thread."""
    task, texts = jobs[0].tasks[0], [text for job in jobs for text in job.texts]
    replies = run.generate(texts, task=task, max_new_tokens=jobs[0].max_new_tokens)
    prompts = run.prompt_tokens(texts, task)
    used = [len(ids) for ids in run.tokenizer(replies, add_special_tokens=False)["input_ids"]]
    answers = [
        {"text": reply, "prompt_tokens": p, "completion_tokens": u}
        for reply, p, u in zip(replies, prompts, used, strict=True)
    ]
    return _split(answers, jobs, lambda job: len(job.texts))


_ANSWER: dict[str, Callable[[Run, list[Job]], list[Any]]] = {
    "analyze": _analyze,
    "embed": _embed,
    "compare": _compare,
    "generate": _generate,
}
