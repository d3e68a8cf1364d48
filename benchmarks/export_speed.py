"""The same run three ways: today's PyTorch path, its fp32 ONNX export, its int8 ONNX export.

On the same stdlib functions (`--functions`, default 512, spread evenly over the standard library with the
scanner's extractor), each setting runs in a process of its own (so its memory is its own, and the ONNX
processes never import torch), kept alive while the parent times `run.analyze(codes)` (every one-snippet
task of the run) in each of them in turn, `--repeats` rounds, interleaved so that machine drift hits all
three alike, after one warm-up call each. It reports, per setting:

  snippets_per_s     functions / median seconds of one analyze call (and every round's seconds)
  peak_rss_mib       the process's peak resident memory (getrusage), model loaded and answering
  install_mib        what the runtime adds to the base install: the installed files of the `train`
                     extra's packages and their dependencies (PyTorch path), or of the `onnx` extra's
                     (onnxruntime, tokenizers and theirs), counted from this environment's metadata
  label_agreement    per task, the share of the functions whose label equals the PyTorch path's
  metric_change      per task, the export's test metrics minus the PyTorch run's, as `mtpeft export`
                     measured them on the run's test split (export.json)

then `mtpeft scan` of the standard library's `email` package through each (the command line, process
start and model load included: wall seconds, units per second, peak RSS of that process).

    .venv/bin/python benchmarks/export_speed.py [RUN_DIR] [--functions 512] [--repeats 5]

Without RUN_DIR it trains the small minilm run of benchmarks/inference_all_tasks.py first. The exports
are written under --workspace (exports/fp32, exports/int8) with `mtpeft export`. Run it with nothing
else running: the numbers are only comparable to each other on one quiet machine. Writes
benchmarks/results/export_speed-<model>.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SETTINGS = ("pytorch", "onnx-fp32", "onnx-int8")
MIB = 2**20
# What each runtime adds to the base install (pyproject extras, without the ones both share).
RUNTIME_ROOTS = {
    "pytorch": ["torch", "transformers", "peft", "accelerate"],
    "onnx-fp32": ["onnxruntime", "tokenizers"],
    "onnx-int8": ["onnxruntime", "tokenizers"],
}


# ---- install sizes ----------------------------------------------------------------------------------
def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def dependency_closure(roots: list[str]) -> set[str]:
    """The installed distributions `roots` need, transitively (requirements without extras, markers
    evaluated for this interpreter), by normalised name; a requirement not installed is left out."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_name(requirement.name))
    return seen


def installed_bytes(name: str) -> int:
    """Bytes of a distribution's installed files (its RECORD), 0 when it is not installed."""
    try:
        files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError:
        return 0
    total = 0
    for file in files:
        path = Path(file.locate())
        if path.is_file():
            total += path.stat().st_size
    return total


def base_dependencies() -> list[str]:
    """mtpeft's own requirements without extras, from this checkout's pyproject.toml (Python 3.11+), else
    from the installed package's metadata."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from packaging.requirements import Requirement

        requires = [Requirement(r) for r in metadata.requires("mtpeft") or []]
        return [_name(r.name) for r in requires if r.marker is None]
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [_name(r) for r in project["dependencies"]]


def install_sizes() -> dict[str, dict[str, Any]]:
    """Per setting, the distributions its runtime adds beyond the base install, and their MiB."""
    base = dependency_closure(base_dependencies())
    sizes = {}
    for setting, roots in RUNTIME_ROOTS.items():
        added = sorted(dependency_closure(roots) - base)
        per = {name: installed_bytes(name) for name in added}
        sizes[setting] = {"mib": round(sum(per.values()) / MIB, 1), "distributions": per}
    return sizes


# ---- the functions -----------------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def sample_functions(root: Path, count: int) -> list[str]:
    """`count` functions spread evenly over the tree (every k-th in path order), deterministic: the
    same ones benchmarks/inference_all_tasks.py times."""
    from mtpeft.scan import ExtractOptions, extract_tree

    units = extract_tree(root, ExtractOptions(exclude=["site-packages/"], languages=["python"])).units
    units = sorted((u for u in units if u.kind != "test"), key=lambda u: (u.path, u.start_line))
    step = max(1, len(units) // count)
    return [u.code for u in units[::step][:count]]


# ---- a worker: one setting, one process ----------------------------------------------------------------
def worker(target: Path, codes_file: Path, batch_size: int) -> None:
    """Load `target` (a run directory or an export folder), then answer the parent's commands, one per
    line on stdin, with one JSON line on stdout: time | answers | quit."""
    import mtpeft

    codes = json.loads(codes_file.read_text(encoding="utf-8"))
    started = time.perf_counter()
    run = mtpeft.load(target, device="cpu", batch_size=batch_size)
    loaded = time.perf_counter() - started
    run.analyze(codes)  # warm-up: allocator, thread pools, tokenizer caches
    _reply({"load_seconds": loaded, "torch_imported": "torch" in sys.modules, "info": run.info})
    for line in sys.stdin:
        command = line.strip()
        if command == "time":
            started = time.perf_counter()
            run.analyze(codes)
            _reply({"seconds": time.perf_counter() - started})
        elif command == "answers":
            answers = run.analyze(codes)
            _reply({"labels": {t: [a[t]["label"] for a in answers] for t in run.snippet_tasks}})
        elif command == "quit":
            _reply({"peak_rss_mib": _peak_rss_mib(), "threads": _threads()})
            return


def _reply(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux: VmHWM of /proc/self/status, the high-water mark of
    this program's own memory: getrusage's ru_maxrss would report the parent's if that was larger (Linux
    carries the forked copy's peak across exec). Elsewhere: ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return peak / MIB if sys.platform == "darwin" else peak / 1024


# `mtpeft scan` as the command line runs it, reporting its own peak memory (as above) when it ends.
SCAN_WRAPPER = """
import atexit, runpy, sys
sys.path.insert(0, sys.argv.pop(1))
from export_speed import _peak_rss_mib
peak_file = sys.argv.pop(1)
atexit.register(lambda: open(peak_file, "w", encoding="utf-8").write(str(_peak_rss_mib())))
sys.argv[0] = "mtpeft"
runpy.run_module("mtpeft.cli.main", run_name="__main__")
"""


def _threads() -> dict[str, Any]:
    threads: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if "torch" in sys.modules:
        threads["torch"] = sys.modules["torch"].get_num_threads()
    return threads


class Worker:
    def __init__(self, setting: str, target: Path, codes_file: Path, batch_size: int) -> None:
        command = [sys.executable, __file__, "--worker", str(target), "--codes", str(codes_file)]
        self.setting = setting
        self.process = subprocess.Popen(
            [*command, "--batch-size", str(batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        self.ready = self._read()

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.setting} worker stopped (exit {self.process.wait()}); see above")
        return json.loads(line)

    def close(self) -> dict[str, Any]:
        final = self.ask("quit")
        self.process.wait()
        return final


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# ---- the parent --------------------------------------------------------------------------------------
def measure(targets: dict[str, Path], codes: list[str], repeats: int, batch_size: int, work: Path) -> dict:
    """Interleaved timing of `run.analyze(codes)` in one worker process per setting."""
    codes_file = work / "codes.json"
    codes_file.write_text(json.dumps(codes), encoding="utf-8")
    workers = {
        setting: Worker(setting, target, codes_file, batch_size) for setting, target in targets.items()
    }
    try:
        seconds: dict[str, list[float]] = {setting: [] for setting in workers}
        for _ in range(repeats):
            for setting, one in workers.items():
                seconds[setting].append(one.ask("time")["seconds"])
        labels = {setting: one.ask("answers")["labels"] for setting, one in workers.items()}
        finals = {setting: one.close() for setting, one in workers.items()}
    finally:
        for one in workers.values():
            one.process.kill()
    out = {}
    for setting, one in workers.items():
        median = statistics.median(seconds[setting])
        out[setting] = {
            "seconds": seconds[setting],
            "median_seconds": median,
            "snippets_per_s": len(codes) / median,
            "load_seconds": one.ready["load_seconds"],
            "torch_imported": one.ready["torch_imported"],
            "method": one.ready["info"]["method"],
            "peak_rss_mib": finals[setting]["peak_rss_mib"],
            "threads": finals[setting]["threads"],
            "label_agreement": label_agreement(labels["pytorch"], labels[setting]),
        }
    return out


def label_agreement(reference: dict[str, list[str]], other: dict[str, list[str]]) -> dict[str, float]:
    """Per task, the share of inputs whose label equals the reference's."""
    return {
        task: sum(a == b for a, b in zip(want, other[task], strict=True)) / len(want)
        for task, want in reference.items()
    }


def scan_email(targets: dict[str, Path], repeats: int, work: Path) -> dict[str, dict[str, Any]]:
    """`mtpeft scan` of stdlib/email through each setting, as a user runs it (a fresh process each)."""
    root = stdlib_root() / "email"
    runs: dict[str, list[dict[str, Any]]] = {setting: [] for setting in targets}
    for _ in range(repeats):
        for setting, target in targets.items():
            report, peak = work / f"scan-{setting}.json", work / f"scan-{setting}.peak"
            command = [sys.executable, "-c", SCAN_WRAPPER, str(HERE), str(peak), "scan", str(root)]
            started = time.perf_counter()
            done = subprocess.run(
                [*command, "--run", str(target), "--format", "json", "--out", str(report), "--no-progress"],
                env=_child_env(),
                stderr=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"mtpeft scan through {setting} failed (status {done.returncode})")
            units = len(json.loads(report.read_text(encoding="utf-8"))["units"])
            rss = float(peak.read_text(encoding="utf-8"))
            runs[setting].append({"wall_seconds": wall, "units": units, "peak_rss_mib": rss})
    out = {}
    for setting, rounds in runs.items():
        wall = statistics.median(r["wall_seconds"] for r in rounds)
        out[setting] = {
            "root": str(root),
            "units": rounds[0]["units"],
            "wall_seconds": [r["wall_seconds"] for r in rounds],
            "median_wall_seconds": wall,
            "units_per_s": rounds[0]["units"] / wall,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rounds),
        }
    return out


def export_metrics(folder: Path, precision: str) -> dict[str, Any]:
    """The export's own check against the run on its test split (export.json), per task."""
    meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    records = meta["agreement"][precision]
    return {
        task: {
            "examples": r["examples"],
            "answers_agree": r.get("answers_agree"),
            "max_difference": r.get("max_difference"),
            "metric_change": r.get("metric_change", {}),
            "safe_to_quantize": r.get("safe_to_quantize"),
        }
        for task, r in records.items()
    }


def export(run_dir: Path, out: Path, quantize: str | None) -> Path:
    if (out / "export.json").is_file():
        meta = json.loads((out / "export.json").read_text(encoding="utf-8"))
        if meta["source"]["run_dir"] == str(run_dir.resolve()):
            return out  # exported from this run before: reused (delete the folder to export again)
    command = [sys.executable, "-m", "mtpeft.cli.main", "export", str(run_dir), "--out", str(out)]
    subprocess.run(command + (["--quantize", quantize] if quantize else []), check=True, env=_child_env())
    return out


def default_run(args: argparse.Namespace) -> Path:
    """benchmarks/inference_all_tasks.py's small run on the offline default benchmark."""
    spec = importlib.util.spec_from_file_location("inference_all_tasks", HERE / "inference_all_tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_default_run(args.workspace, args.model, args.heads, args.steps, args.max_length)


def machine() -> dict[str, Any]:
    versions = {}
    for name in ("torch", "onnxruntime", "tokenizers", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
    }


def table(result: dict[str, Any]) -> str:
    """The README's table: one row per setting."""
    speed, scan, sizes = result["analyze"], result.get("scan") or {}, result["install"]
    reference = speed["pytorch"]["snippets_per_s"]
    lines = [
        "| setting | snippets/s | vs PyTorch | peak RSS MiB | install MiB | label agreement | email scan s |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        row = speed[setting]
        agreement = min(row["label_agreement"].values()) if row["label_agreement"] else 1.0
        scanned = f"{scan[setting]['median_wall_seconds']:.1f}" if setting in scan else "-"
        lines.append(
            f"| {setting} | {row['snippets_per_s']:.1f} | {row['snippets_per_s'] / reference:.2f}x | "
            f"{row['peak_rss_mib']:.0f} | {sizes[setting]['mib']:.0f} | {agreement:.1%} (worst task) | "
            f"{scanned} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="A trained run (default: train a small one).")
    parser.add_argument("--functions", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scan-repeats", type=int, default=1, help="Rounds of the email scan (0: none).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="minilm", help="Model of the run trained without RUN_DIR.")
    parser.add_argument("--heads", type=int, default=4, help="One-snippet heads of that run.")
    parser.add_argument("--steps", type=int, default=20, help="Training steps of that run.")
    parser.add_argument("--max-length", type=int, default=256, help="Token limit of that run.")
    parser.add_argument("--workspace", type=Path, default=Path("workspace/export-benchmark"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--codes", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.codes, args.batch_size)
        return

    run_dir = (args.run_dir or default_run(args)).resolve()
    work = args.workspace / "exports"
    work.mkdir(parents=True, exist_ok=True)
    targets = {
        "pytorch": run_dir,
        "onnx-fp32": export(run_dir, work / "fp32", None),
        "onnx-int8": export(run_dir, work / "int8", "int8"),
    }
    started_load = os.getloadavg()
    codes = sample_functions(stdlib_root(), args.functions)
    print(f"{len(codes)} stdlib functions, {args.repeats} interleaved rounds ...", file=sys.stderr)
    analyze = measure(targets, codes, args.repeats, args.batch_size, work)
    scan = scan_email(targets, args.scan_repeats, work) if args.scan_repeats else None
    meta = json.loads((targets["onnx-fp32"] / "export.json").read_text(encoding="utf-8"))
    result = {
        "benchmark": "export_speed",
        "run": str(run_dir),
        "model": meta["source"]["model"],
        "method": meta["source"]["method"],
        "functions": len(codes),
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "machine": machine()
        | {"load_average_at_start": started_load, "load_average_at_end": os.getloadavg()},
        "analyze": analyze,
        "scan": scan,
        "install": install_sizes(),
        "test_split": {
            "onnx-fp32": export_metrics(targets["onnx-fp32"], "fp32"),
            "onnx-int8": export_metrics(targets["onnx-int8"], "int8"),
        },
        "speedup": {s: analyze[s]["snippets_per_s"] / analyze["pytorch"]["snippets_per_s"] for s in SETTINGS},
    }
    out = args.out or RESULTS / f"export_speed-{Path(result['model']).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(result))
    unsafe = [t for t, r in result["test_split"]["onnx-int8"].items() if r["safe_to_quantize"] is False]
    if unsafe:
        print(f"not safe to quantize (a test metric drops by more than 0.01): {', '.join(unsafe)}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
