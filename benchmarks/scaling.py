"""Data-parallel overhead: 1 process x 2 threads against 2 processes x 1 thread, same global batch.

Both settings run `mtpeft train` on ONE config (model, LoRA, tasks, data subset, seed, steps), so they
train on the same global batches: with 2 processes each takes its contiguous share of every task's batch
(src/mtpeft/modeling/distributed.py) and DDP all-reduces the gradients once per step (gloo, CPU). The
machine's cores are the budget: 1 x `--cores` threads against `--cores` processes x 1 thread. On 2 CPU
cores no speed-up is expected (the same arithmetic on the same cores); what this measures is the cost of
splitting: the collectives, the second copy of the model and its bookkeeping, and smaller matmuls.

    .venv/bin/python benchmarks/scaling.py                     # minilm, ../shared/data, 20 steps
    .venv/bin/python benchmarks/scaling.py --model tiny-bert --steps 6 --warmup 1 --profile-steps 1

Each setting is the real command in a fresh child: `python scaling.py --worker SPEC` (1 process) or
`torchrun --standalone --nproc_per_node 2 scaling.py --worker SPEC` (2), which wraps
`MultiTaskTrainer._step` with a timer and then runs `mtpeft.cli.main train CONFIG` unchanged.

What is reported per setting:
- tokens/s and examples/s, steady state: the run's global non-padding tokens (examples) of steps
  `warmup+1 .. steps-profile_steps` divided by their wall time on process 0 (each step's period: from its
  start to the next step's start, so the loop's own logging between steps is counted). The first
  `--warmup` steps are left out (allocator growth, first-call dispatch and, with several processes, the
  gloo connections settling); the last `--profile-steps` are left out because the profiler slows them.
  Per-step token and example counts are the CostMeter's (global counts, all-reduced, the same on every
  process); their sum is checked against the run's cost.json, and the steps against its train.log.
- as recorded: cost.json's own tokens_per_s / samples_per_s (every step, warm-up, profiled steps and the
  end-of-run validation included: what `mtpeft train` reports to a user).
- communication share, from torch.profiler over the last `--profile-steps` steps of every process:
  `comm_in_flight` = wall time during which at least one collective was under way (the union of the
  intervals of every profiler event whose name contains gloo:, c10d::, all_reduce/allreduce,
  all_gather/allgather, broadcast, barrier or scatter, on any thread: the DDP gradient all-reduce runs on
  gloo's background thread, overlapping the backward; the sync all-reduces of the global loss and
  counts, the code-search all-gather and its backward, and DDP's buffer broadcast in every forward run
  on the main one), as a share of the step's wall time. `comm_exposed` = the part of that time during
  which the main thread ran no compute op (no aten:: op outside a collective): the time the step was
  held up by communication. Both include waiting for the other process to reach the collective (load
  imbalance between shares shows up as communication), so they bound the pure transfer cost from above.
  self CPU time of the collectives is not used: gloo's events are asynchronous (self time ~0) and a
  blocking wait is recorded under no op. With 1 process the same profiler sees no collective (0%).
- step time ratio and overhead: 2x1's steady step time / 1x2's, minus 1.

Writes benchmarks/results/scaling-<model>.json (or --out) and prints a Markdown table for the README.
The machine (peer_compare.machine_info) and the load average before and after each setting are recorded:
on a busy machine the numbers are not final (say so with --note).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_compare  # noqa: E402  (the benchmarks' shared helpers: machine_info, load_average, parse_tasks)

RESULTS = peer_compare.RESULTS
SCRIPT = Path(__file__).resolve()
BIN = Path(sys.executable).parent
DEFAULT_DATA = Path(os.environ.get("MTPEFT_SHARED_DATA", peer_compare.DEFAULT_DATA))
DEFAULT_TASKS = "vuln=vulnerability@reveal-chrome,clone=clone@bigclonebench,search=code-search@tlcodesum"
# Offline fallback (`mtpeft data build-default`): a classification, a pair and a code-search task.
FALLBACK_TASKS = "defect=py-defect@py-defect,clone=py-clone@py-clone,search=py-search@py-search"
COLLECTIVE_MARKERS = (
    "gloo:",
    "c10d::",
    "allreduce",
    "all_reduce",
    "allgather",
    "all_gather",
    "broadcast",
    "barrier",
    "scatter",
)
METHOD = {
    "rate": (
        "global non-padding tokens (examples) of steps warmup+1..steps-profile_steps / their wall time on "
        "process 0 (step start to next step start); per-step counts from the CostMeter, checked against "
        "cost.json"
    ),
    "comm_in_flight": (
        "torch.profiler over the last profile_steps steps of every process: union of the wall-clock "
        "intervals of collective events (names containing " + ", ".join(COLLECTIVE_MARKERS) + ") on any "
        "thread, / step wall time; gloo runs DDP's gradient all-reduce on a background thread, overlapping "
        "the backward, so part of this time is hidden"
    ),
    "comm_exposed": (
        "the part of comm_in_flight during which the main thread ran no aten:: compute op: time the step "
        "was held up by communication (including waiting for the other process)"
    ),
    "warmup": "the first `warmup` steps are left out of the rates, and the profiled ones (profiler overhead)",
}


# ---- the child: one process of one setting --------------------------------------------------------------


def _is_collective(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in COLLECTIVE_MARKERS)


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _minus(base: list[tuple[float, float]], cut: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Parts of the (merged) intervals `base` not covered by the (merged) intervals `cut`."""
    out = []
    for start, end in base:
        pos = start
        for c_start, c_end in cut:
            if c_end <= pos or c_start >= end:
                continue
            if c_start > pos:
                out.append((pos, c_start))
            pos = max(pos, c_end)
        if pos < end:
            out.append((pos, end))
    return out


def communication(events: Sequence[Any], step_label: str) -> dict[str, Any]:
    """Communication in one profiled step, from the profiler's events (times in microseconds)."""
    (step,) = [e for e in events if e.name == step_label]
    main = step.thread
    comm, compute, by_name = [], [], {}
    for event in events:
        span = (event.time_range.start, event.time_range.end)
        if _is_collective(event.name):
            comm.append(span)
            entry = by_name.setdefault(event.name, {"count": 0, "total_ms": 0.0})
            entry["count"] += 1
            entry["total_ms"] += (span[1] - span[0]) / 1e3
        elif event.thread == main and event.name.startswith("aten::"):
            compute.append(span)
    in_flight = _union(comm)
    exposed = _minus(in_flight, _union(compute))
    wall = step.time_range.end - step.time_range.start
    return {
        "step_wall_s": wall / 1e6,
        "comm_in_flight_s": _length(in_flight) / 1e6,
        "comm_exposed_s": _length(exposed) / 1e6,
        "collectives": {k: v | {"total_ms": round(v["total_ms"], 3)} for k, v in sorted(by_name.items())},
    }


def worker_main(spec_path: str) -> int:
    """Runs `mtpeft train` as the CLI does, with each step timed (and the last ones profiled)."""
    import torch

    from mtpeft.cli.main import main as cli_main
    from mtpeft.training.trainer import MultiTaskTrainer

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    rank = int(os.environ.get("RANK", "0"))
    first_profiled = spec["steps"] - spec["profile_steps"] + 1
    records: list[dict[str, Any]] = []
    original = MultiTaskTrainer._step
    label = "scaling.step"

    def timed_step(self, model, optimizer, scheduler, step_tasks, meter, step):  # noqa: ANN001, ANN202
        before = (meter.tokens, meter.padded_tokens, meter.samples)
        profiled = step >= first_profiled
        record: dict[str, Any] = {"step": step, "threads": torch.get_num_threads(), "profiled": profiled}
        started = time.perf_counter()
        if profiled:
            from torch.profiler import ProfilerActivity, profile, record_function

            with profile(activities=[ProfilerActivity.CPU]) as prof, record_function(label):
                losses = original(self, model, optimizer, scheduler, step_tasks, meter, step)
            ended = time.perf_counter()
            record["profile"] = communication(prof.events(), label)
        else:
            losses = original(self, model, optimizer, scheduler, step_tasks, meter, step)
            ended = time.perf_counter()
        record |= {
            "start": started,
            "end": ended,
            "tokens": meter.tokens - before[0],
            "positions": meter.padded_tokens - before[1],
            "examples": meter.samples - before[2],
        }
        records.append(record)
        return losses

    MultiTaskTrainer._step = timed_step
    sys.argv = ["mtpeft", "train", spec["config"], "--workspace", spec["workspace"], "--no-progress"]
    code = 0
    try:
        cli_main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        out = Path(spec["out"]) / f"steps-rank{rank}.json"
        out.write_text(json.dumps({"rank": rank, "steps": records}))
    return code


# ---- the parent -----------------------------------------------------------------------------------------


def write_config(args: argparse.Namespace, data: Path, tasks: list[Any], scratch: Path) -> Path:
    import yaml

    config = {
        "name": "scaling",
        "model": args.model,
        "method": "lora",
        "tasks": [
            {
                "task": ref.task,
                "name": ref.name,
                "data": str(data / ref.folder),
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "max_train_examples": args.train_examples,
                "max_eval_examples": args.valid_examples,
            }
            for ref in tasks
        ],
        "max_steps": args.steps,
        "eval_every": args.steps,  # validation once, after the last step (outside the measured window)
        "save_every": args.steps,
        "seed": args.seed,
        "lr": args.lr,
        "evaluate_splits": [],
        "baselines": False,
    }
    path = scratch / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_setting(
    args: argparse.Namespace, config: Path, scratch: Path, processes: int, threads: int
) -> dict[str, Any]:
    name = f"{processes}x{threads}"
    work = scratch / name
    work.mkdir()
    spec = {
        "config": str(config),
        "workspace": str(work / "workspace"),
        "threads": threads,
        "steps": args.steps,
        "profile_steps": args.profile_steps,
        "out": str(work),
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    script = [str(SCRIPT), "--worker", str(spec_path)]
    if processes == 1:
        command = [sys.executable, *script]
    else:
        command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes), *script]
    env = os.environ | {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    load_before = peer_compare.load_average()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"setting {name} exited {done.returncode}:\n{done.stderr[-4000:]}")
    ranks = [
        json.loads((work / f"steps-rank{rank}.json").read_text(encoding="utf-8")) for rank in range(processes)
    ]
    (run_dir,) = [p for p in (work / "workspace" / "runs").iterdir() if p.is_dir()]
    cost = json.loads((run_dir / "cost.json").read_text(encoding="utf-8"))
    logged = [
        json.loads(line)
        for line in (run_dir / "train.log").read_text(encoding="utf-8").splitlines()
        if '"loss"' in line
    ]
    return summarise(args, name, processes, threads, ranks, cost, logged) | {
        "command": " ".join(command),
        "child_process_s": elapsed,
        "load_average_before": load_before,
        "load_average_after": peer_compare.load_average(),
    }


def summarise(
    args: argparse.Namespace,
    name: str,
    processes: int,
    threads: int,
    ranks: list[dict[str, Any]],
    cost: dict[str, Any],
    logged: list[dict[str, Any]],
) -> dict[str, Any]:
    steps = sorted(ranks[0]["steps"], key=lambda r: r["step"])
    if [r["step"] for r in steps] != list(range(1, args.steps + 1)) or len(logged) != args.steps:
        raise SystemExit(f"setting {name}: expected steps 1..{args.steps}, got {[r['step'] for r in steps]}")
    total_tokens = sum(r["tokens"] for r in steps)
    if total_tokens != cost["tokens"] or sum(r["examples"] for r in steps) != cost["samples"]:
        raise SystemExit(f"setting {name}: per-step counts {total_tokens} disagree with cost.json")
    # Each step's period: its start to the next step's start (the last measured one is followed by the
    # first profiled one, or is the run's last step: then its own end).
    periods = [
        (steps[i + 1]["start"] if i + 1 < len(steps) else steps[i]["end"]) - steps[i]["start"]
        for i in range(len(steps))
    ]
    measured = range(args.warmup, args.steps - args.profile_steps)
    wall = sum(periods[i] for i in measured)
    tokens = sum(steps[i]["tokens"] for i in measured)
    examples = sum(steps[i]["examples"] for i in measured)
    profiles = [
        {"rank": rank["rank"], "step": r["step"]} | r["profile"]
        for rank in ranks
        for r in rank["steps"]
        if r.get("profile")
    ]

    def share(key: str) -> float:
        return sum(p[key] for p in profiles) / sum(p["step_wall_s"] for p in profiles) if profiles else 0.0

    return {
        "setting": name,
        "processes": processes,
        "threads_per_process": threads,
        "threads_seen_in_step": sorted({r["threads"] for rank in ranks for r in rank["steps"]}),
        "measured_steps": [steps[i]["step"] for i in measured],
        "tokens_per_s": tokens / wall,
        "examples_per_s": examples / wall,
        "step_s": wall / len(measured),
        "step_s_all": [round(p, 4) for p in periods],
        "tokens_per_step": [r["tokens"] for r in steps],
        "comm_in_flight_share": share("comm_in_flight_s"),
        "comm_exposed_share": share("comm_exposed_s"),
        "profiled": profiles,
        "recorded": {
            "tokens": cost["tokens"],
            "samples": cost["samples"],
            "wall_time_s": cost["wall_time_s"],
            "tokens_per_s": cost["tokens_per_s"],
            "samples_per_s": cost["samples_per_s"],
            "peak_memory_bytes_process0": cost["peak_memory_bytes"],
            "padding_fraction": cost["padding_fraction"],
        },
        "final_loss": logged[-1]["loss"],
    }


def markdown_table(result: dict[str, Any]) -> str:
    base = result["settings"][0]
    lines = [
        "| setting | tokens/s | examples/s | step (s) | vs 1 process | comm in flight | comm exposed "
        "| tokens/s as recorded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["settings"]:
        processes, threads = row["processes"], row["threads_per_process"]
        lines.append(
            f"| {processes} process{'es' if processes > 1 else ''} x {threads} "
            f"thread{'s' if threads > 1 else ''} | {row['tokens_per_s']:,.0f} "
            f"| {row['examples_per_s']:.2f} | {row['step_s']:.2f} "
            f"| {row['tokens_per_s'] / base['tokens_per_s']:.2f}x "
            f"| {100 * row['comm_in_flight_share']:.1f}% | {100 * row['comm_exposed_share']:.1f}% "
            f"| {row['recorded']['tokens_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def prepare_data(args: argparse.Namespace, scratch: Path) -> tuple[Path, str, str]:
    if args.data.is_dir():
        return args.data, args.tasks or DEFAULT_TASKS, str(args.data)
    from mtpeft.data.default_suite import build_default

    data = scratch / "data"
    build_default(data, seed=13, max_per_task=max(10, args.train_examples))
    return data, args.tasks or FALLBACK_TASKS, "offline default benchmark (mtpeft data build-default)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the task folders")
    parser.add_argument("--tasks", default=None, help=f"name=task@folder,... (default {DEFAULT_TASKS})")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the rates")
    parser.add_argument("--profile-steps", type=int, default=2, help="last steps profiled (left out too)")
    parser.add_argument("--batch-size", type=int, default=16, help="every task's GLOBAL batch")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--train-examples", type=int, default=400)
    parser.add_argument("--valid-examples", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2, help="1 process x N threads vs N processes x 1")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per setting")
    parser.add_argument("--note", default="", help="recorded as is (e.g. 'busy machine')")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.profile_steps < 0 or args.steps - args.warmup - args.profile_steps < 1:
        parser.error("need steps > warmup + profile-steps (at least one measured step)")
    if args.profile_steps < 1:
        parser.error("--profile-steps must be at least 1 (the communication share comes from them)")
    if args.cores < 2:
        parser.error("--cores must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtpeft-scaling-") as tmp:
        scratch = Path(tmp)
        data, task_text, source = prepare_data(args, scratch)
        tasks = peer_compare.parse_tasks(task_text)
        config = write_config(args, data, tasks, scratch)
        settings = [
            run_setting(args, config, scratch, 1, args.cores),
            run_setting(args, config, scratch, args.cores, 1),
        ]
    single, split = settings
    result = {
        "benchmark": "scaling",
        "model": args.model,
        "method": "lora",
        "data": source,
        "tasks": [f"{t.name}={t.task}@{t.folder}" for t in tasks],
        "global_batch_size_per_task": args.batch_size,
        "max_length": args.max_length,
        "train_examples_per_task": args.train_examples,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "profile_steps": args.profile_steps,
        "cores": args.cores,
        "backend": "gloo (CPU), torchrun --standalone",
        "same_global_batches": single["tokens_per_step"] == split["tokens_per_step"],
        "method_notes": METHOD,
        "machine": peer_compare.machine_info(),
        "note": args.note,
        "settings": settings,
        "step_time_ratio": split["step_s"] / single["step_s"],
        "overhead": split["step_s"] / single["step_s"] - 1.0,
        "speedup_tokens_per_s": split["tokens_per_s"] / single["tokens_per_s"],
    }
    result["markdown"] = markdown_table(result)
    out = args.out or RESULTS / f"scaling-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(result["markdown"])
    print(
        f"\n{args.cores} processes x 1 thread vs 1 process x {args.cores} threads: "
        f"{result['speedup_tokens_per_s']:.2f}x the tokens/s (step time {100 * result['overhead']:+.1f}%); "
        f"communication {100 * split['comm_in_flight_share']:.1f}% of step time in flight, "
        f"{100 * split['comm_exposed_share']:.1f}% exposed -> {out}"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit(main())
