"""AdamW's step on mtpeft's real trainable parameters: PyTorch's per-tensor loop, `foreach`, `fused`.

mtpeft trains with the fused kernel (training/trainer.py). This times one optimiser step (with
zero_grad) for each implementation on the trainable parameters of a LoRA run and of a full fine-tune
of the same model and task (module and head as `mtpeft train` builds them), with random gradients.
The optimiser is a small share of a PEFT step (0.6% in peer_compare's profile); this shows how small,
and what the kernel saves where it is not small (full fine-tuning).

    .venv/bin/python benchmarks/optimizer_step.py [--model minilm] [--repeats 30]

Writes benchmarks/results/optimizer_step-<model>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peer_compare import machine_info  # this script's folder is on sys.path when run as a script

from mtpeft.config import TrainConfig
from mtpeft.modeling.build import build_model
from mtpeft.tasks import get_task

RESULTS = Path(__file__).parent / "results"
IMPLEMENTATIONS = {
    "per-tensor loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def trainable(model_name: str, method: str) -> list[torch.nn.Parameter]:
    config = TrainConfig(model=model_name, method=method, tasks=[{"task": "vulnerability"}])
    built = build_model(config, {"vulnerability": get_task("vulnerability")})
    return [p for p in built.model.parameters() if p.requires_grad]


def step_ms(params: list[torch.nn.Parameter], options: dict, repeats: int) -> float:
    optimizer = torch.optim.AdamW(params, lr=1e-4, **options)
    times = []
    for attempt in range(repeats + 3):  # 3 warm-up steps (state allocation)
        for p in params:
            p.grad = torch.randn_like(p)
        start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if attempt >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for method in ("lora", "full"):
        params = trainable(args.model, method)
        count = sum(p.numel() for p in params)
        times = {name: step_ms(params, options, args.repeats) for name, options in IMPLEMENTATIONS.items()}
        rows.append({"method": method, "trainable_params": count, "tensors": len(params), "step_ms": times})
    report = {
        "model": args.model,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
        "rows": rows,
    }
    out = args.out or RESULTS / f"optimizer_step-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("| method | trainable params | " + " | ".join(f"{n} (ms)" for n in IMPLEMENTATIONS) + " |")
    print("|---|---|" + "---|" * len(IMPLEMENTATIONS))
    for row in rows:
        cells = " | ".join(f"{row['step_ms'][n]:.2f}" for n in IMPLEMENTATIONS)
        print(f"| {row['method']} | {row['trainable_params']:,} | {cells} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
