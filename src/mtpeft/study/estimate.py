"""What a planned run will cost, before it runs (`mtpeft study --dry-run`).

tokens  = optimiser steps x micro-batches per step (one per task) x batch size x tokens per example,
          with every input padded to its max length: an upper bound (dynamic padding computes less).
FLOPs  ~= 6 x backbone params x tokens for full fine-tuning, 4 x params x tokens with a frozen backbone
          (the same estimate the cost meter records; see mtpeft.training.cost).
seconds = tokens x (measured wall seconds per estimated token) of finished runs of the same model
          (and method, where there are some) in the store; unknown without any.
Lookahead affinity (`affinity: {every: K}`) adds, per measurement, the step's batches scored N + 1 times
without a backward (before, and after each task's lookahead): ~2 x params per token, in FLOPs and, in
proportion to the FLOPs, in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mtpeft.config import TaskEntry, TrainConfig, validate_config
from mtpeft.store import RunRecord
from mtpeft.store.sqlite import MERGED
from mtpeft.tasks import get_task
from mtpeft.tasks.kinds import kind_of


@dataclass(frozen=True)
class RunEstimate:
    micro_batches: int
    tokens: int
    flops: float | None
    seconds: float | None


@dataclass(frozen=True)
class Throughput:
    seconds_per_token: float
    source: str  # which finished runs it was measured on


def tokens_per_step(config: TrainConfig) -> int:
    return sum(entry.batch_size * _tokens_per_example(entry) for entry in config.tasks)


def _tokens_per_example(entry: TaskEntry) -> int:
    try:
        kind = kind_of(get_task(entry.task))
    except Exception:  # a task YAML that is not there yet: count one input per example
        return entry.max_length
    return kind.max_tokens(entry)


@cache
def backbone_parameters(model: str) -> int | None:
    """Parameter count of a known short model name, without loading weights; None when unknown."""
    from mtpeft.models.registry import MODELS

    entry = MODELS.get(model)
    if entry is None or entry.parameter_count is None:
        return None
    try:
        return entry.parameter_count()
    except Exception:  # package missing or unreadable: the estimate just says unknown
        return None


def estimate_run(config: TrainConfig, throughput: Throughput | None, done_steps: int = 0) -> RunEstimate:
    """The cost of the steps still to train (`done_steps`: those a resumed run takes from its checkpoint)."""
    steps = max(config.max_steps - done_steps, 0)
    tokens = steps * tokens_per_step(config)
    params = backbone_parameters(config.model)
    factor = 6.0 if config.method == "full" else 4.0
    # Forward-only tokens of the lookaheads, in units of trained tokens' FLOPs (2 vs `factor` per param).
    lookahead = _lookahead_tokens(config, steps) * 2.0 / factor
    return RunEstimate(
        micro_batches=steps * len(config.tasks),
        tokens=tokens,
        flops=factor * params * (tokens + lookahead) if params else None,
        seconds=(tokens + lookahead) * throughput.seconds_per_token if throughput else None,
    )


def _lookahead_tokens(config: TrainConfig, steps: int) -> int:
    """Tokens the lookahead affinity scores without a backward over `steps` steps (0 when off)."""
    if config.affinity is None or len(config.tasks) < 2:
        return 0
    return (steps // config.affinity.every) * (len(config.tasks) + 1) * tokens_per_step(config)


def _record_config(record: RunRecord) -> TrainConfig | None:
    data = {k: v for k, v in record.config.items() if k != "key"}
    try:
        return validate_config(data)
    except Exception:  # written by an older version: not usable for calibration
        return None


def measured_throughput(records: list[RunRecord], model: str, method: str) -> Throughput | None:
    """Wall seconds per estimated token on finished runs of this model and method (else this model)."""
    finished = [  # merged runs trained nothing: their wall time is a merge's
        r
        for r in records
        if r.status == "finished" and r.mode != MERGED and r.model == model and r.cost.get("wall_time_s")
    ]
    same_method = [r for r in finished if r.method == method]
    chosen = same_method or finished
    pairs = [(r.cost["wall_time_s"], _record_config(r)) for r in chosen]
    pairs = [(wall, cfg) for wall, cfg in pairs if cfg is not None]
    if not pairs:
        return None
    tokens = sum(cfg.max_steps * tokens_per_step(cfg) for _, cfg in pairs)
    seconds = sum(wall for wall, _ in pairs)
    what = f"{model}/{method}" if same_method else f"{model} (any method)"
    return Throughput(seconds / max(tokens, 1), f"{len(pairs)} finished {what} run(s) in the store")
