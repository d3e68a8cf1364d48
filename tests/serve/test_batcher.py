"""Micro-batching: concurrent jobs of every endpoint answered from one backbone pass, each exactly as
the run answers it alone, and bounded by the snippet budget."""

from __future__ import annotations

import numpy as np
import pytest

from mtpeft.serve.batcher import Job, MicroBatcher
from mtpeft.serve.settings import Batching

CODE = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def add(a, b):\n    return a + b\n",
    "public int size() { return items.length; }",
    "void g() { free(p); free(p); }",
]


def _passes(run) -> tuple[list[int], object]:
    rows: list[int] = []
    handle = run.model.backbone.register_forward_hook(
        lambda _m, _a, kwargs, _o: rows.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    return rows, handle


def _jobs(run) -> list[Job]:
    snippet, pair = run.snippet_tasks, run.pair_tasks[0]
    return [
        Job("tiny", "analyze", CODE[:2], snippet),
        Job("tiny", "analyze", CODE[2:], snippet[:1]),
        Job("tiny", "compare", [CODE[0]], [pair], others=[CODE[3]]),
        Job("tiny", "embed", CODE[1:3], [run.retrieval_tasks[0]]),
        Job("tiny", "embed", ["add two numbers"], [run.retrieval_tasks[0]], query=True),
    ]


def test_a_mixed_batch_is_one_backbone_pass_with_the_runs_own_answers(served_run) -> None:
    batcher = MicroBatcher({"tiny": served_run}, Batching(max_wait_ms=200))
    jobs = _jobs(served_run)
    futures = [batcher.submit(job) for job in jobs]  # queued before the worker starts: one batch
    rows, handle = _passes(served_run)
    batcher.start()
    try:
        results = [future.result(timeout=60) for future in futures]
    finally:
        batcher.stop()
        handle.remove()
    assert len(rows) == 1, f"expected one backbone pass for the whole batch, got {len(rows)}"
    alone = served_run.analyze(CODE[:2])
    for got, want in zip(results[0], alone, strict=True):
        assert got.keys() == want.keys()
        for task in want:
            assert got[task]["label"] == want[task]["label"]
            assert got[task]["probability"] == pytest.approx(want[task]["probability"], abs=1e-5)
    assert list(results[1][0]) == served_run.snippet_tasks[:1]
    pair = served_run.compare([CODE[0]], [CODE[3]], task=served_run.pair_tasks[0])[0]
    assert results[2][0]["probability"] == pytest.approx(pair["probability"], abs=1e-5)
    np.testing.assert_allclose(results[3], served_run.embed(CODE[1:3]), atol=1e-5)
    np.testing.assert_allclose(results[4], served_run.embed(["add two numbers"], query=True), atol=1e-5)


def test_batches_stay_within_the_snippet_budget(served_run) -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(
        {"tiny": served_run},
        Batching(max_wait_ms=200, max_snippets=3),
        on_batch=lambda s: sizes.append(s.snippets),
    )
    futures = [batcher.submit(Job("tiny", "analyze", [code], served_run.snippet_tasks)) for code in CODE * 2]
    batcher.start()
    try:
        for future in futures:
            future.result(timeout=60)
    finally:
        batcher.stop()
    assert sum(sizes) == 8 and max(sizes) <= 3


def test_a_bad_job_fails_alone(served_run) -> None:
    batcher = MicroBatcher({"tiny": served_run}, Batching(max_wait_ms=200))
    good = batcher.submit(Job("tiny", "analyze", CODE[:1], served_run.snippet_tasks))
    bad = batcher.submit(Job("tiny", "analyze", ["x\ud800y"], served_run.snippet_tasks))
    batcher.start()
    try:
        assert set(good.result(timeout=60)[0]) == set(served_run.snippet_tasks)
        with pytest.raises(Exception, match="surrogate"):
            bad.result(timeout=60)
    finally:
        batcher.stop()


def test_jobs_nobody_waits_for_are_never_computed(served_run) -> None:
    """A queued job whose client left (future cancelled) and one abandoned after it was gathered cost no
    backbone row; the job still wanted is answered."""
    batcher = MicroBatcher({"tiny": served_run}, Batching(max_wait_ms=200))
    gone = Job("tiny", "analyze", CODE[:2], served_run.snippet_tasks)
    abandoned = Job("tiny", "analyze", CODE[2:], served_run.snippet_tasks)
    wanted = Job("tiny", "embed", ["add two numbers"], [served_run.retrieval_tasks[0]], query=True)
    futures = [batcher.submit(job) for job in (gone, abandoned, wanted)]
    assert futures[0].cancel()
    abandoned.abandoned = True  # as the handler marks a job whose batch was already gathered
    rows, handle = _passes(served_run)
    batcher.start()
    try:
        assert len(futures[2].result(timeout=60)) == 1
    finally:
        batcher.stop()
        handle.remove()
    assert sum(rows) == 1, f"only the wanted query should be encoded, got {sum(rows)} rows"
    with pytest.raises(Exception, match="Nobody waits|client"):
        futures[1].result(timeout=1)


def test_stop_refuses_every_waiting_job_at_once(served_run) -> None:
    from mtpeft.serve.batcher import ServerStopping

    batcher = MicroBatcher({"tiny": served_run}, Batching())
    futures = [batcher.submit(Job("tiny", "analyze", [code], served_run.snippet_tasks)) for code in CODE]
    futures[0].cancel()  # its client left: not counted as refused
    assert batcher.stop() == len(CODE) - 1
    for future in futures[1:]:
        with pytest.raises(ServerStopping):
            future.result(timeout=0)
    with pytest.raises(ServerStopping):
        batcher.submit(Job("tiny", "analyze", CODE[:1], served_run.snippet_tasks))
