"""Multi-task training throughput: mtpeft's batching vs a pad-to-max reference, same everything else.

Both runs use the same model, tasks, data subset, seed, optimiser and number of steps, and the
same training loop. They differ only in what the published replication code does differently:
the reference pads every sequence to max_length and draws random (not length-grouped) batches.
Throughput = non-padding tokens processed per second of training wall time (evaluation excluded).
Each run is then scored on the validation split, so a faster run that learns less would show.

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--model minilm] [--data ../shared/data]

Writes benchmarks/results/train_throughput-<model>.json and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from mtpeft.config import validate_config
from mtpeft.training.run import run_training

RESULTS = Path(__file__).parent / "results"


def shared_tasks(data: Path, subset: int, max_length: int) -> list[dict]:
    sizes = {
        "max_train_examples": subset,
        "max_eval_examples": 200,
        "max_length": max_length,
        "batch_size": 8,
    }
    return [
        {"task": "vulnerability", "data": str(data / "reveal-chrome"), **sizes},
        {"task": "clone", "data": str(data / "bigclonebench"), **sizes},
        {"task": "code-search", "data": str(data / "tlcodesum"), **sizes},
        {"task": "flaky", "data": str(data / "flakeflagger"), **sizes},
    ]


def default_tasks(workspace: Path, subset: int, max_length: int) -> list[dict]:
    from mtpeft.data.default_suite import build_default

    data = workspace / "data"
    build_default(data, seed=13)
    sizes = {
        "max_train_examples": subset,
        "max_eval_examples": 200,
        "max_length": max_length,
        "batch_size": 8,
    }
    return [{"task": t, "data": str(data / t), **sizes} for t in ("py-defect", "py-clone", "py-search")]


def run_setting(name: str, tasks: list[dict], args, workspace: Path, *, grouped: bool) -> dict:
    config = validate_config(
        {
            "name": name,
            "model": args.model,
            "method": "lora",
            "tasks": tasks,
            "max_steps": args.steps,
            "eval_every": args.steps,
            "save_every": args.steps,
            "seed": 0,
            "workspace": str(workspace),
            "length_grouping": grouped,
            "dynamic_padding": grouped,
            "evaluate_splits": [],
            "baselines": False,
            "lr": 1e-3,
        }
    )
    started = time.perf_counter()
    result = run_training(config, progress=False)[0]
    cost = result.cost
    valid = result.metrics["valid"]
    return {
        "setting": name,
        "tokens": cost["tokens"],
        "padded_positions": cost["padded_tokens"],
        "train_wall_time_s": cost["wall_time_s"],
        "tokens_per_s": cost["tokens_per_s"],
        "padding_fraction": cost["padding_fraction"],
        "peak_memory_bytes": cost["peak_memory_bytes"],
        "valid_primary": {t: next(iter(m.values())) for t, m in valid.items()},
        "valid_mean_primary": sum(next(iter(m.values())) for m in valid.values()) / len(valid),
        "total_seconds_with_eval": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default="minilm")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    parser.add_argument("--subset", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        if args.data.is_dir():
            tasks, source = shared_tasks(args.data, args.subset, args.max_length), str(args.data)
        else:
            tasks, source = (
                default_tasks(workspace, args.subset, args.max_length),
                "offline default benchmark",
            )
        mtpeft = run_setting("mtpeft", tasks, args, workspace, grouped=True)
        reference = run_setting("reference", tasks, args, workspace, grouped=False)
    speedup = mtpeft["tokens_per_s"] / reference["tokens_per_s"]
    result = {
        "benchmark": "train_throughput",
        "model": args.model,
        "method": "lora",
        "steps": args.steps,
        "data": source,
        "tasks": [t["task"] for t in tasks],
        "subset_per_task": args.subset,
        "max_length": args.max_length,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        },
        "mtpeft": mtpeft,
        "reference": reference,
        "speedup_tokens_per_s": speedup,
        "valid_score_delta": mtpeft["valid_mean_primary"] - reference["valid_mean_primary"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"train_throughput-{args.model}-len{args.max_length}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"train_throughput {args.model}: mtpeft {mtpeft['tokens_per_s']:.0f} tok/s vs reference "
        f"{reference['tokens_per_s']:.0f} tok/s = {speedup:.2f}x; mean valid primary "
        f"{mtpeft['valid_mean_primary']:.3f} vs {reference['valid_mean_primary']:.3f} -> {out}"
    )


if __name__ == "__main__":
    main()
