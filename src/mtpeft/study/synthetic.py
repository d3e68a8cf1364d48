"""A synthetic study store: every run of a study grid recorded as if trained, with no model involved.

For tests, for the README's report screenshot and to try `mtpeft report` in a second. Each run's
predictions are drawn so that a task's accuracy (or top-1 rate) is its single-task quality plus the mean
transfer from its partners, plus seed noise; the stored metrics are computed from those predictions by the
real metric code, and the per-example files are written like a real run's. Costs follow the cost meter's
FLOPs formula. Nothing here is a measurement: reports built on it say "synthetic" in the study name.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mtpeft.layout import RUNS_DIR, per_example_path, store_path
from mtpeft.paths import safe_filename
from mtpeft.store import RunStore
from mtpeft.study.grid import PlannedRun, expand
from mtpeft.study.spec import StudySpec, parse_study
from mtpeft.study.stats import PerExample
from mtpeft.tasks import TaskKind, get_task

TASKS = ["py-defect", "py-clone", "py-search"]
# Task quality alone, and T[i][j]: defect and clone help each other, search is hurt by and hurts both.
QUALITY = {"py-defect": 0.70, "py-clone": 0.80, "py-search": 0.55}
TRANSFER = {
    ("py-defect", "py-clone"): 0.04,
    ("py-clone", "py-defect"): 0.02,
    ("py-defect", "py-search"): -0.03,
    ("py-search", "py-defect"): -0.05,
    ("py-clone", "py-search"): -0.02,
    ("py-search", "py-clone"): -0.06,
}
METHOD_OFFSET = {"lora": 0.0, "adapter": 0.005, "full": 0.01}
SHARED_PARAMS = {"lora": 147_456, "adapter": 1_200_000, "full": 22_713_216}
BACKBONE_PARAMS = 22_713_216
HEAD_PARAMS = 74_113
SECONDS_PER_FLOP = 2.5e-12  # a 2-core CPU's pace, for plausible wall times
N_EXAMPLES = 1000


def synthetic_spec(
    *,
    name: str = "synthetic",
    workspace: str | Path = "workspace",
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    task_sets: list[Any] | None = None,
) -> StudySpec:
    return parse_study(
        {
            "name": name,
            "workspace": str(workspace),
            "base": {"max_steps": 100, "eval_every": 50, "save_every": 50, "pooling": "mean"},
            "tasks": [
                {"task": t, "data": f"{{workspace}}/data/{t}", "batch_size": 16, "max_length": 128}
                for t in TASKS
            ],
            "grid": {
                "models": ["minilm"],
                "methods": methods or ["lora", "full"],
                "task_sets": task_sets or ["single", "all", "pairs"],
                "seeds": seeds or [0],
            },
        }
    )


def _quality(run: PlannedRun, task: str) -> float:
    partners = [TRANSFER.get((task, other), 0.0) for other in run.group if other != task]
    salt = [run.config.seed, TASKS.index(task), len(run.group), *map(ord, run.config.method)]
    noise = np.random.default_rng(salt).normal(0, 0.015)
    offset = METHOD_OFFSET.get(run.config.method, 0.0)
    return float(
        np.clip(QUALITY[task] + (np.mean(partners) if partners else 0.0) + offset + noise, 0.05, 0.99)
    )


def _predictions(kind: str, quality: float, seed: int, salt: int) -> PerExample:
    """Predictions on the seed's test examples (the same for every run of that seed, as in real runs);
    exactly round(quality x n) of them right, so the stored scores follow QUALITY and TRANSFER closely."""
    truth_rng = np.random.default_rng([seed, 7])
    rng = np.random.default_rng([seed, salt])
    correct = np.zeros(N_EXAMPLES, dtype=bool)
    correct[rng.permutation(N_EXAMPLES)[: round(quality * N_EXAMPLES)]] = True
    if kind == TaskKind.RETRIEVAL:
        wrong_ranks = rng.integers(2, 50, N_EXAMPLES)
        return {"ranks": np.where(correct, 1, wrong_ranks).astype(int).tolist()}
    y_true = truth_rng.integers(0, 2, N_EXAMPLES)
    return {"y_true": y_true.tolist(), "y_pred": np.where(correct, y_true, 1 - y_true).tolist()}


def _cost(run: PlannedRun) -> dict[str, Any]:
    cfg = run.config
    tokens = cfg.max_steps * sum(e.batch_size * e.max_length for e in cfg.tasks)
    shared = SHARED_PARAMS.get(cfg.method, 150_000)
    heads = HEAD_PARAMS * len(cfg.tasks)
    factor = 6.0 if cfg.method == "full" else 4.0
    flops = factor * BACKBONE_PARAMS * tokens
    return {
        "trainable_params": shared + heads,
        "shared_params": shared,
        "head_params": heads,
        "backbone_params": BACKBONE_PARAMS,
        "trainable_pct": 100.0 * (shared + heads) / BACKBONE_PARAMS,
        "stored_bytes": 4 * (shared + heads),
        "full_model_bytes": 4 * BACKBONE_PARAMS,
        "tokens": int(tokens * 0.7),
        "padded_tokens": tokens,
        "train_flops_estimate": flops,
        "wall_time_s": flops * SECONDS_PER_FLOP,
        "peak_memory_bytes": 900_000_000 + 50_000_000 * len(cfg.tasks),
        "samples_per_s": 30.0,
        "tokens_per_s": 3000.0,
        "tokens_by_task": {},
    }


def _quality_summary(task: str) -> dict[str, Any]:
    splits = {
        split: {"count": count, "positive_rate": 0.5, "duplicate_rate": 0.01, "p50_len": 90, "p95_len": 240}
        for split, count in (("train", 2000), ("valid", 200), ("test", 200))
    }
    return {"task": task, "tokenizer": "synthetic", "splits": splits, "leakage": 0, "conflicts": 0}


def record_run(store: RunStore, run: PlannedRun, *, per_example: bool = True) -> str:
    """Write one planned run to the store as finished, with metrics computed from drawn predictions."""
    from mtpeft.evaluation.metrics import compute_metrics

    cfg = run.config
    run_dir = Path(cfg.workspace) / RUNS_DIR / f"{safe_filename(run.display_name)}-{run.key[:10]}"
    run_id = store.start_run(
        name=run.display_name,
        study=cfg.study,
        group_id=None,
        mode=cfg.mode,
        model=cfg.model,
        method=cfg.method,
        tasks=list(run.group),
        seed=cfg.seed,
        config=cfg.hashable() | {"key": run.key},
        run_dir=str(run_dir),
    )
    metrics: dict[str, dict[str, float]] = {}
    baselines = {}
    for task in run.group:
        spec = get_task(task)
        salt = zlib.crc32(run.display_name.encode())  # not the key: it holds the workspace's data paths
        preds = _predictions(spec.kind, _quality(run, task), cfg.seed, salt)
        metrics[task] = compute_metrics(spec.metrics, **preds)
        baselines[task] = {
            "majority": {m: 0.5 for m in spec.metrics},
            "tfidf": {m: 0.6 for m in spec.metrics},
        }
        if per_example:
            path = per_example_path(run_dir, "test", task)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(preds), encoding="utf-8")
    cost = _cost(run)
    store.finish_run(
        run_id,
        metrics={"test": metrics},
        cost=cost,
        baselines=baselines,
        data_quality={t: _quality_summary(t) for t in run.group},
        details={"curve": _curve(run, metrics, cost)},
    )
    return run_id


def _curve(run: PlannedRun, final: dict[str, dict[str, float]], cost: dict[str, Any]) -> list[dict[str, Any]]:
    """A validation curve rising to the final scores (0.1 lower at step 0, straight in between), with the
    run's compute growing in proportion to its steps; test scores equal to valid ones."""
    cfg = run.config
    points = []
    for step in range(cfg.eval_every, cfg.max_steps + 1, cfg.eval_every):
        behind = 0.1 * (1 - step / cfg.max_steps)
        metrics = {t: {m: max(v - behind, 0.0) for m, v in ms.items()} for t, ms in final.items()}
        keys = ("tokens", "padded_tokens", "train_flops_estimate", "wall_time_s")
        compute = {k: cost[k] * step / cfg.max_steps for k in keys}
        score = float(np.mean([metrics[t][get_task(t).primary] for t in metrics]))
        points.append({"step": step, "score": score, "metrics": metrics, "compute": compute, "test": metrics})
    return points


def synthetic_store(spec: StudySpec, *, per_example: bool = True) -> RunStore:
    """Record every run of `spec` as finished in the workspace's store."""
    store = RunStore(store_path(spec.workspace))
    for run in expand(spec):
        record_run(store, run, per_example=per_example)
    return store


def record_scores(
    store: RunStore,
    scores: dict[str, float],
    *,
    study: str = "hand-made",
    seed: int = 0,
    model: str = "minilm",
    method: str = "lora",
    cost: dict[str, Any] | None = None,
    run_dir: str | Path = "runs/none",
    baselines: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    task_settings: dict[str, dict[str, Any]] | None = None,
) -> str:
    """One finished run with exactly these primary scores ({task: score}, tasks in the run's order).

    settings: train-config fields of the run; task_settings: {task: fields of its task entry}.
    """
    tasks = list(scores)
    config = {
        "tasks": [{"task": t} | (task_settings or {}).get(t, {}) for t in tasks],
        "method_options": {},
        "key": f"{study}-{model}-{method}-{'+'.join(tasks)}-{seed}"
        + (f"-{settings}-{task_settings}" if settings or task_settings else ""),
    } | (settings or {})
    run_id = store.start_run(
        name=f"{study}-{model}-{method}-s{seed}-{'+'.join(tasks)}",
        study=study,
        group_id=None,
        mode="single" if len(tasks) == 1 else "multi",
        model=model,
        method=method,
        tasks=tasks,
        seed=seed,
        config=config,
        run_dir=str(run_dir),
    )
    metrics = {t: {get_task(t).primary: v} for t, v in scores.items()}
    store.finish_run(run_id, metrics={"test": metrics}, cost=cost or {}, baselines=baselines, details=details)
    return run_id
