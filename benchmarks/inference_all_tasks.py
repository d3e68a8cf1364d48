"""Inference cost of N one-snippet tasks: one backbone pass for all of them vs one pass per task.

On the same batch of real functions (extracted from the Python standard library with the scanner's
extractor), in the same process, with the same loaded run, batch size and device, it times:

  all-in-one   run.analyze(codes): every one-snippet task of the run from ONE encode per snippet
  one task     run.analyze(codes, tasks=[first]): the cost of a single task
  per task     run.analyze(codes, tasks=[t]) for each task t: N encodes, what N single-task models cost

each `--repeats` times (interleaved, after a warm-up), and reports medians; the target is all-in-one at
most 1.15x one task. Then it scans a real tree (default: the standard library, site-packages excluded)
with `scan_tree` and reports functions per second.

    .venv/bin/python benchmarks/inference_all_tasks.py [RUN_DIR] [--functions 512] [--repeats 5]

Without RUN_DIR it trains a small run on the offline default benchmark first (as the demo builds it).
That benchmark has one one-snippet task (py-defect), so the run trains it under `--heads` names (four
heads on the same data) beside py-clone and py-search: the cost being measured does not depend on what
the heads learnt. Writes benchmarks/results/inference_all_tasks-<model>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
TARGET_RATIO = 1.15


def train_default_run(workspace: Path, model: str, heads: int, steps: int, max_length: int) -> Path:
    """A small run on the offline default benchmark: `heads` one-snippet heads, a pair and a search task."""
    from mtpeft.config import validate_config
    from mtpeft.data.default_suite import build_default
    from mtpeft.training.run import run_training

    data = workspace / "data"
    if not (data / "SOURCE.md").exists():
        print(f"building the offline default benchmark in {data} ...", file=sys.stderr)
        build_default(data, seed=13)
    sizes = {"max_train_examples": 200, "max_eval_examples": 50, "max_length": max_length, "batch_size": 8}
    defect = [
        {
            "task": "py-defect",
            "name": "py-defect" if i == 0 else f"py-defect-{i + 1}",
            "data": str(data / "py-defect"),
        }
        for i in range(heads)
    ]
    others = [{"task": t, "data": str(data / t)} for t in ("py-clone", "py-search")]
    config = validate_config(
        {
            "name": f"inference-bench-{heads}heads",
            "model": model,
            "method": "lora",
            "method_options": {"r": 8, "alpha": 16},
            "pooling": "mean",
            "tasks": [entry | sizes for entry in defect + others],
            "lr": 1e-3,
            "max_steps": steps,
            "eval_every": steps,
            "save_every": steps,
            "evaluate_splits": [],
            "baselines": False,
            "workspace": str(workspace),
            "seed": 0,
        }
    )
    print(f"training {config.name} ({steps} steps, {model}) ...", file=sys.stderr)
    return run_training(config, progress=False)[0].run_dir


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def sample_functions(root: Path, count: int) -> list[str]:
    """`count` functions spread evenly over the tree (every k-th in path order), deterministic."""
    from mtpeft.scan import ExtractOptions, extract_tree

    units = extract_tree(root, ExtractOptions(exclude=["site-packages/"], languages=["python"])).units
    units = sorted((u for u in units if u.kind != "test"), key=lambda u: (u.path, u.start_line))
    step = max(1, len(units) // count)
    return [u.code for u in units[::step][:count]]


def time_settings(settings: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each setting, `repeats` times, interleaved so machine drift hits all alike."""
    for call in settings.values():
        call()  # warm-up: allocator, thread pools, tokenizer caches
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, call in settings.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def check_same_answers(together: list[dict], apart: dict[str, list[dict]]) -> float:
    """Largest probability difference between all-in-one and per-task answers (should be float noise)."""
    worst = 0.0
    for task, answers in apart.items():
        for a, b in zip(together, answers, strict=True):
            left = np.array(list(a[task]["probabilities"].values()))
            right = np.array(list(b[task]["probabilities"].values()))
            worst = max(worst, float(np.abs(left - right).max()))
    return worst


def encoded_rows(run, call: Callable[[], object]) -> int:
    """Snippet passes the backbone ran for one call."""
    rows: list[int] = []
    handle = run.model.backbone.register_forward_hook(
        lambda _m, _a, kwargs, _o: rows.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    try:
        call()
    finally:
        handle.remove()
    return sum(rows)


def measure_tasks(run, codes: list[str], repeats: int) -> dict:
    tasks = run.snippet_tasks
    first = tasks[0]
    settings: dict[str, Callable[[], object]] = {
        "all_in_one": lambda: run.analyze(codes),
        "one_task": lambda: run.analyze(codes, tasks=[first]),
        "per_task": lambda: [run.analyze(codes, tasks=[t]) for t in tasks],
    }
    seconds = time_settings(settings, repeats)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    apart = {t: run.analyze(codes, tasks=[t]) for t in tasks}
    tokens = run.count_tokens(codes)
    return {
        "tasks": tasks,
        "n_tasks": len(tasks),
        "functions": len(codes),
        "tokens_mean": statistics.mean(tokens),
        "truncated": sum(1 for n in tokens if n > run.max_tokens),
        "max_tokens": run.max_tokens,
        "batch_size": run.batch_size,
        "repeats": repeats,
        "seconds": seconds,
        "median_seconds": median,
        "backbone_rows": {name: encoded_rows(run, call) for name, call in settings.items()},
        "ratio_all_in_one_vs_one_task": median["all_in_one"] / median["one_task"],
        "ratio_per_task_vs_all_in_one": median["per_task"] / median["all_in_one"],
        "target_ratio": TARGET_RATIO,
        "target_met": median["all_in_one"] / median["one_task"] <= TARGET_RATIO,
        "max_probability_difference": check_same_answers(run.analyze(codes), apart),
    }


def measure_scan(run, root: Path, batch_size: int) -> dict:
    from mtpeft.scan import scan_tree

    with run.reusing_encodings():  # as `mtpeft scan` does
        result = scan_tree(root, run, exclude=["site-packages/"], batch_size=batch_size, progress=False)
    total = result.timings["total"]
    analyzed = sum(1 for answers in result.answers if answers)
    return {
        "root": str(root),
        "files": result.files,
        "skipped_files": len(result.skipped),
        "units": len(result.units),
        "units_analyzed": analyzed,
        "truncated": len(result.truncated),
        "clone_pairs": len(result.clone_pairs),
        "timings_s": result.timings,
        "units_per_s": len(result.units) / total,
        "analyzed_units_per_s_analyze_phase": analyzed / max(result.timings.get("analyze", 0.0), 1e-9),
    }


def machine(run) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu",
    }


def add_default_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings of the run trained when no RUN_DIR is given (shared with benchmarks/serve_load.py)."""
    parser.add_argument("--model", default="minilm", help="Model of the run trained without RUN_DIR.")
    parser.add_argument(
        "--heads", type=int, default=4, help="One-snippet heads of the run trained without RUN_DIR."
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="Training steps of the run trained without RUN_DIR."
    )
    parser.add_argument(
        "--max-length", type=int, default=256, help="Token limit of the run trained without RUN_DIR."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="A trained run (default: train a small one).")
    parser.add_argument("--functions", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    add_default_run_arguments(parser)
    parser.add_argument("--workspace", type=Path, default=Path("workspace/inference-benchmark"))
    parser.add_argument("--scan-root", type=Path, default=None, help="Tree to scan (default: the stdlib).")
    parser.add_argument("--no-scan", action="store_true", help="Skip the scan measurement.")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import mtpeft

    run_dir = args.run_dir or train_default_run(
        args.workspace, args.model, args.heads, args.steps, args.max_length
    )
    run = mtpeft.load(run_dir, device=args.device, batch_size=args.batch_size)
    if len(run.snippet_tasks) < 2:
        raise SystemExit(
            f"{run_dir} has {len(run.snippet_tasks)} one-snippet task(s); the comparison needs 2+"
        )
    codes = sample_functions(stdlib_root(), args.functions)
    print(
        f"{len(codes)} stdlib functions, {len(run.snippet_tasks)} tasks, {args.repeats} repeats ...",
        file=sys.stderr,
    )
    tasks = measure_tasks(run, codes, args.repeats)
    scan = None if args.no_scan else measure_scan(run, args.scan_root or stdlib_root(), args.batch_size)
    result = {
        "benchmark": "inference_all_tasks",
        "run": run.info,
        "model": run.model_info.name,
        "method": run.config.method,
        "machine": machine(run),
        "tasks": tasks,
        "scan": scan,
    }
    out = args.out or RESULTS / f"inference_all_tasks-{Path(run.model_info.name).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    m, ratio = tasks["median_seconds"], tasks["ratio_all_in_one_vs_one_task"]
    print(
        f"{tasks['n_tasks']} tasks on {tasks['functions']} functions: all-in-one {m['all_in_one']:.2f} s, "
        f"one task {m['one_task']:.2f} s ({ratio:.3f}x, target <= {TARGET_RATIO}), "
        f"per task {m['per_task']:.2f} s ({tasks['ratio_per_task_vs_all_in_one']:.2f}x all-in-one)"
    )
    if scan:
        print(
            f"scan {scan['root']}: {scan['units']} units in {scan['timings_s']['total']:.1f} s = "
            f"{scan['units_per_s']:.1f} units/s"
        )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
