"""benchmarks/scaling.py end to end on tiny-bert and fixture data (1 process x 2 threads, 2 x 1), plus its
interval arithmetic."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from mtpeft.data.fixtures import write_fixture_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"
TASKS = "vuln=vulnerability@devign-jsonl,search=code-search@codesearchnet"
STEPS, WARMUP, PROFILED = 3, 1, 1


def _load():
    spec = importlib.util.spec_from_file_location("scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scaling"] = module
    spec.loader.exec_module(module)
    return module


sc = _load()


def test_both_settings_run_on_the_same_global_batches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for fmt in ("devign-jsonl", "codesearchnet"):
        write_fixture_dataset(fmt, data, n_per_split=16)
    out = tmp_path / "scaling.json"
    command = [
        sys.executable, str(SCRIPT), "--model", "tiny-bert", "--data", str(data), "--tasks", TASKS,
        "--steps", str(STEPS), "--warmup", str(WARMUP), "--profile-steps", str(PROFILED),
        "--batch-size", "8", "--max-length", "48", "--train-examples", "16", "--valid-examples", "8",
        "--note", "test", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["benchmark"] == "scaling" and report["model"] == "tiny-bert" and report["note"] == "test"
    assert report["tasks"] == TASKS.split(",")
    for key in ("machine", "method_notes", "markdown", "overhead", "speedup_tokens_per_s", "step_time_ratio"):
        assert key in report, key
    assert {"cpu", "logical_cpus", "torch"} <= set(report["machine"])
    single, split = report["settings"]
    assert (single["processes"], single["threads_per_process"]) == (1, 2)
    assert (split["processes"], split["threads_per_process"]) == (2, 1)
    assert single["threads_seen_in_step"] == [2] and split["threads_seen_in_step"] == [1]
    # The same config trains on the same global batches whatever the number of processes.
    assert report["same_global_batches"] is True
    assert single["recorded"]["tokens"] == split["recorded"]["tokens"] > 0
    assert single["recorded"]["samples"] == split["recorded"]["samples"] == STEPS * 8 * 2
    for row in (single, split):
        assert row["measured_steps"] == list(range(WARMUP + 1, STEPS - PROFILED + 1))
        assert row["tokens_per_s"] > 0 and row["examples_per_s"] > 0 and row["step_s"] > 0
        assert len(row["step_s_all"]) == STEPS
        assert 0.0 <= row["comm_exposed_share"] <= row["comm_in_flight_share"] <= 1.0
        assert "load_average_before" in row and row["recorded"]["wall_time_s"] > 0
    # One process communicates nothing; two do, on both ranks, with the gradient all-reduce among it.
    assert single["comm_in_flight_share"] == 0.0
    assert [p["rank"] for p in single["profiled"]] == [0]
    assert sorted(p["rank"] for p in split["profiled"]) == [0, 1]
    assert split["comm_in_flight_share"] > 0
    for profile in split["profiled"]:
        assert "gloo:all_reduce" in profile["collectives"]
    assert "| 2 processes x 1 thread |" in done.stdout and "| 1 process x 2 threads |" in done.stdout


def test_interval_arithmetic() -> None:
    merged = sc._union([(5, 7), (0, 2), (1, 3), (6, 8)])
    assert merged == [(0, 3), (5, 8)] and sc._length(merged) == 6
    assert sc._minus(merged, sc._union([(1, 2), (4, 6), (7, 9)])) == [(0, 1), (2, 3), (6, 7)]
    assert sc._minus([(0, 4)], []) == [(0, 4)]
    assert sc._is_collective("gloo:all_reduce") and sc._is_collective("c10d::allreduce_")
    assert sc._is_collective("_AllGatherBackward") and not sc._is_collective("aten::mm")
