"""Prometheus metrics of one server, through prometheus-client, on a registry of its own.

A registry per app (not the library's global one) so two apps in one process (tests) do not collide.
Backbone passes and tokens are counted by a forward hook on each run's backbone (an exported run's: a
hook on each run of its ONNX graph, ExportedRun.watch_passes), so they count what the model really ran,
whichever endpoint or batch caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from mtpeft.api import Run
    from mtpeft.serve.batcher import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mtpeft_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "mtpeft_request_seconds", "Request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "mtpeft_batch_requests", "Requests answered per gathered batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_snippets = Histogram(
            "mtpeft_batch_snippets", "Snippets per gathered batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "mtpeft_batch_seconds", "Model time per gathered batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.passes = Counter(
            "mtpeft_backbone_passes", "Backbone forward passes (one per padded batch)", ["run"], registry=r
        )
        self.rows = Counter("mtpeft_backbone_rows", "Sequences encoded by the backbone", ["run"], registry=r)
        self.tokens = Counter(
            "mtpeft_backbone_tokens", "Non-padding tokens encoded by the backbone", ["run"], registry=r
        )
        self.queue = Gauge("mtpeft_queue_requests", "Requests waiting for the model", registry=r)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_requests.observe(stats.requests)
        self.batch_snippets.observe(stats.snippets)
        self.batch_seconds.observe(stats.seconds)

    def watch_backbones(self, runs: dict[str, Run]) -> list[RemovableHandle]:
        """Count every forward of each distinct backbone (a hook: no change to the inference path).

        A run served under two names is one backbone, counted once, under its first name.
        """
        handles, seen = [], set()
        for name, run in runs.items():
            if hasattr(run, "watch_passes"):  # an ExportedRun: no torch module to hook
                handles.append(run.watch_passes(self._pass_counter(name)))
                continue
            backbone = run.model.backbone
            if id(backbone) not in seen:
                seen.add(id(backbone))
                handles.append(backbone.register_forward_hook(self._counter(name), with_kwargs=True))
        return handles

    def _pass_counter(self, name: str) -> Callable[[int, int], None]:
        def count(rows: int, tokens: int) -> None:
            self.passes.labels(name).inc()
            self.rows.labels(name).inc(rows)
            self.tokens.labels(name).inc(tokens)

        return count

    def _counter(self, name: str) -> Callable[..., None]:
        def count(_module: Any, _args: Any, kwargs: dict[str, Any], _output: Any) -> None:
            mask = kwargs.get("attention_mask")
            if mask is None:
                return
            self.passes.labels(name).inc()
            self.rows.labels(name).inc(int(mask.shape[0]))
            self.tokens.labels(name).inc(int(mask.sum()))

        return count

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
