"""`make demo`: the main job on the offline default benchmark, sized for a 2-core CPU.

Builds the benchmark (stdlib + HumanEval), shows its data-quality inspection, then trains one
LoRA per task (single) and one shared LoRA for all tasks (multi) on `minilm` with the same steps
per task, and prints per-task test scores beside the baselines and the measured cost of each.
"""

from __future__ import annotations

import time
from pathlib import Path

from mtpeft.report.console import console, cost_table, plain, scores_table

DEMO_TASKS = ["py-defect", "py-clone", "py-search"]
# Chosen so the whole demo (both settings, evaluation, baselines) fits in ~15 min on 2 cores.
DEMO_SIZES = {"max_train_examples": 1000, "max_eval_examples": 200, "max_length": 128, "batch_size": 8}
DEMO_STEPS = 60


def demo_config(workspace: Path, steps: int) -> dict:
    data = workspace / "data"
    return {
        "name": "demo",
        "model": "minilm",
        "method": "lora",
        "method_options": {"r": 8, "alpha": 16},
        "pooling": "mean",  # minilm was pre-trained as a mean-pooled sentence encoder
        "tasks": [{"task": t, "data": str(data / t), **DEMO_SIZES} for t in DEMO_TASKS],
        "lr": 1e-3,
        "max_steps": steps,
        "eval_every": max(steps // 2, 1),
        "save_every": steps,
        "workspace": str(workspace),
        "seed": 0,
    }


def run_demo(workspace: Path, *, steps: int | None = None) -> None:
    from mtpeft.cli.data_build_cmd import print_report as print_inspection
    from mtpeft.config import validate_config
    from mtpeft.data.default_suite import build_default
    from mtpeft.data.inspect import inspect_task
    from mtpeft.layout import store_path
    from mtpeft.store import RunStore
    from mtpeft.tasks import get_task
    from mtpeft.training.cost import sum_costs
    from mtpeft.training.run import run_training

    started = time.perf_counter()
    steps = steps or DEMO_STEPS
    data = workspace / "data"
    if not (data / "SOURCE.md").exists():
        console.rule("1. Building the offline default benchmark")
        build_default(data, seed=13)
    console.rule("2. Data quality")
    for task in DEMO_TASKS:
        print_inspection(inspect_task(get_task(task), data / task))
    console.rule("3. Training: one LoRA per task vs one shared LoRA")
    console.print(
        f"model minilm, LoRA r=8; per task: {DEMO_SIZES}; {steps} optimiser steps per run "
        "(a multi-task step sees one batch of each task, so each task gets the same number of batches)"
    )
    base = demo_config(workspace, steps)
    single = run_training(validate_config(base | {"mode": "single", "name": "demo-single"}))
    multi = run_training(validate_config(base | {"mode": "multi", "name": "demo-multi"}))[0]

    console.rule("4. Results")
    rows = []
    for result in single:
        task = result.tasks[0]
        spec = get_task(task)
        s = result.metrics["test"][task][spec.primary]
        m = multi.metrics["test"][task][spec.primary]
        rows.append(
            (
                task,
                spec.primary,
                {"single": s, "multi": m, "multi - single": m - s},
                multi.baselines.get(task, {}),
            )
        )
    console.print(
        scores_table(
            "Test scores: single-task LoRA vs one shared multi-task LoRA",
            rows,
            ["single", "multi", "multi - single"],
        )
    )
    single_cost = sum_costs([r.cost for r in single])
    settings = {f"single ({len(single)} runs)": single_cost, "multi (1 run)": multi.cost}
    console.print(cost_table(settings, num_tasks=len(DEMO_TASKS)))
    console.print(
        plain(
            f"Store: {store_path(workspace)} ({len(RunStore(store_path(workspace)).list_runs())}"
            f" runs); demo took {time.perf_counter() - started:.0f} s"
        )
    )
