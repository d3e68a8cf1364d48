"""benchmarks/optimizer_step.py on tiny-bert: every AdamW implementation timed on real parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "optimizer_step.py"


def test_each_implementation_is_timed_for_lora_and_full_fine_tuning(tmp_path: Path) -> None:
    out = tmp_path / "optimizer.json"
    command = [sys.executable, str(SCRIPT), "--model", "tiny-bert", "--repeats", "2", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == {"lora", "full"}
    # LoRA trains a small share of what a full fine-tune trains, on the same model and head.
    assert 0 < rows["lora"]["trainable_params"] < rows["full"]["trainable_params"]
    for row in rows.values():
        assert set(row["step_ms"]) == {"per-tensor loop", "foreach", "fused"}
        assert all(ms > 0 for ms in row["step_ms"].values())
    assert report["machine"]["cpu"] and report["threads"] >= 1
    assert "| lora |" in done.stdout and "| full |" in done.stdout  # the Markdown table the README quotes
