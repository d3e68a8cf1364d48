"""What FSDP divides: per-process bytes of weights, gradients and AdamW state, full fine-tuning.

One config (minilm `full`, one vulnerability task on the repo's fixture data, batch 4, 2 steps) is
trained with the real trainer in three settings, each in a fresh child:

    1 process:          python benchmarks/fsdp_memory.py --worker none
    2 processes, DDP:   torchrun --standalone --nproc_per_node 2 benchmarks/fsdp_memory.py --worker none
    2 processes, FSDP:  torchrun --standalone --nproc_per_node 2 benchmarks/fsdp_memory.py --worker fsdp

and, after training, each process counts what it holds: its parameters (a sharded one: its shard), their
gradients (zeroed with set_to_none after each step, so none are left: counted at the last backward
instead, by a hook on the optimiser step) and AdamW's moments; plus the process's resident memory now
(psutil rss) and its peak (getrusage maxrss). The peak includes loading the whole model before
sharding (every process loads it, then shards it), so the tensor counts are the figure FSDP changes.

    .venv/bin/python benchmarks/fsdp_memory.py            # all three, result in benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "fsdp_memory-minilm.json"
MIB = 2**20


def _worker(sharding: str, out: Path) -> None:
    import psutil
    import torch

    from mtpeft.config import TrainConfig
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.modeling import fsdp
    from mtpeft.modeling.distributed import gather_objects
    from mtpeft.training.run import join_processes
    from mtpeft.training.trainer import MultiTaskTrainer

    shard = join_processes()
    root = Path(tempfile.mkdtemp(prefix="fsdp-memory-"))
    data = write_fixture_dataset("devign-jsonl", root / f"data{shard.rank}", n_per_split=16)
    config = TrainConfig(
        name="memory",
        model="minilm",
        method="full",
        tasks=[{"task": "vulnerability", "data": str(data), "batch_size": 4, "max_length": 64}],
        max_steps=2,
        eval_every=2,
        save_every=100,
        baselines=False,
        distributed={"sharding": sharding},
    )
    run_dir = root / "run"
    run_dir.mkdir()
    trainer = MultiTaskTrainer(config, run_dir, progress=False)
    grad_bytes: list[int] = []

    def count_grads(optimizer, args, kwargs) -> None:  # just before each step: the gradients held
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_bytes.append(sum(fsdp.local(g).numel() * g.element_size() for g in grads))

    original = trainer._optimizer

    def hooked():
        optimizer = original()
        optimizer.register_step_pre_hook(count_grads)
        return optimizer

    trainer._optimizer = hooked
    trainer.train(resume=False)
    model, optimizer = trainer._training
    params = sum(fsdp.local(p).numel() * p.element_size() for p in model.parameters())
    moments = sum(
        fsdp.local(value).numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value) and value.dim() > 0
    )
    mine = {
        "rank": shard.rank,
        "param_mib": params / MIB,
        "grad_mib": max(grad_bytes) / MIB,
        "adamw_state_mib": moments / MIB,
        "rss_after_mib": psutil.Process().memory_info().rss / MIB,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    everyone = gather_objects(mine)
    if shard.rank == 0:
        out.write_text(json.dumps(everyone, indent=1))


def _child(processes: int, sharding: str, out: Path) -> list[dict]:
    here = str(Path(__file__).resolve())
    bin_dir = Path(sys.executable).parent
    if processes == 1:
        command = [sys.executable, here, "--worker", sharding, "--out", str(out)]
    else:
        command = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", str(processes)]
        command += [here, "--worker", sharding, "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(command, env=env, check=True, timeout=1200)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", choices=["none", "fsdp"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.out)
        return
    settings = [("1 process", 1, "none"), ("2 processes, DDP", 2, "none"), ("2 processes, FSDP", 2, "fsdp")]
    with tempfile.TemporaryDirectory() as scratch:
        result = {
            "model": "minilm",
            "method": "full",
            "settings": {
                name: _child(processes, sharding, Path(scratch) / f"{processes}-{sharding}.json")
                for name, processes, sharding in settings
            },
        }
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
