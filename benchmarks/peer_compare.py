"""Training speed of mtpeft against the pipelines a user would pick instead, and against the machine's limit.

One invocation trains, on the same data, model, PEFT targets (LoRA r=8, alpha 16, dropout 0.1 on the
architecture's default targets: query/value for BERT), batch size, optimiser steps, learning rate and seed:

single task (default: devign-sysevr vulnerability, 1000 train examples, batch 8)
  mtpeft               `mtpeft train`'s own path (mtpeft.training.run.run_training), validation at the end
  trainer-random       transformers.Trainer + peft, random batches, DataCollatorWithPadding
  trainer-grouped      the same with train_sampling_strategy="group_by_length"
  trainer-pad-to-max   the same, random batches, every example padded to max length (the published
                       replication code's way)
  mtpeft-pad-to-max    ablation: mtpeft's own loop with length grouping and dynamic padding off
multi-task (default: the four classification tasks of examples/train/shared-data-multi.yaml)
  mtpeft-shared        one mtpeft run, one shared LoRA, each step one batch of every task
  trainer-*-sequential one Trainer + peft run per task, one after the other (the user's alternative),
                       the same number of batches per task

at each max length (default 128 tokens for 100 steps, 512 tokens for 40 steps). Every setting runs in a
fresh child process (so each has its own peak RSS and nothing carries over), in interleaved order over
`--repeats`.

Reported per setting:
- non-padding tokens/s: real tokens of every training forward pass of the backbone (counted by a forward
  pre-hook on the transformers base model, the same hook in both pipelines; evaluation passes are not
  counted), divided by the wall time of the training steps (first step start to last optimiser step
  end: sampling, collation, forward, backward, clipping, optimiser and the loop's own bookkeeping;
  model loading, tokenisation, validation and saving excluded);
- total wall time: the whole pipeline as a user runs it (model load, tokenisation, training, the
  pipeline's own end-of-training validation, saving the model);
- peak RSS (ru_maxrss of the child, read before scoring);
- validation accuracy (and F1 of label 1): every setting scored by ONE function of this script over the
  same validation examples in the same batches; each model through its own forward and input encoding;
- MFU (below).

FLOPs formula (matmul FLOPs only; elementwise ops, softmax, layer norm, embeddings, pooler and heads,
which cost per sequence rather than per token, are left out). Per transformer layer the matmul weights
(Q, K, V, O, FFN in and out) split into N_frozen (the base weights) and N_train (trainable: the LoRA A and
B matrices; every weight under full fine-tuning). For one training forward+backward pass, per position:

    dense     = 2 (N_frozen + N_train)   forward
              + 2 (N_frozen + N_train)   backward, gradient w.r.t. the activations
              + 2 N_train                backward, weight gradients (frozen weights get none)
              = 4 N_frozen + 6 N_train    (6 N for a full fine-tune)
    attention = 12 * layers * hidden * T  (QK^T and PV: 4 T hidden forward, 8 T hidden backward)

for a sequence of T positions. Model FLOPs count real tokens only: sum over sequences of
l * dense + 12 * layers * hidden * l^2 (l = the sequence's real length); hardware FLOPs count every
computed position (l -> the padded width). Layer 0's Q/K/V input gradients are counted though autograd
skips them (the embeddings are frozen): a ~1/(8 * layers) overcount (2% for 6 layers).

Machine limit: the same run times fp32 matmuls at the model's shapes (M = batch * max_length rows:
[M, h] x [h, h], [M, h] x [h, 4h], [M, 4h] x [4h, h] for the forward and activation-gradient matmuls,
and the attention's batched [T, d] x [d, T] and [T, T] x [T, d]) at the start and at the end; the limit
is the FLOP-weighted rate of that mix (time = sum of each shape's FLOP share / its best measured rate).
MFU = model FLOPs / training-step wall time / limit; `mfu_hardware` uses hardware FLOPs instead (high
there and low in MFU means the machine is busy computing padding).

    .venv/bin/python benchmarks/peer_compare.py                      # the full comparison (hours on 2 cores)
    .venv/bin/python benchmarks/peer_compare.py --lengths 128:100 --cases single --profile

Writes benchmarks/results/peer_compare-<model>.json (or --out) and prints a Markdown table.
`--profile [SETTING]` adds a torch.profiler breakdown by phase of one mtpeft run at the first length (the
first case's plain mtpeft setting, or SETTING); `--profile-only` runs just that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Offline and quiet: the shipped models need no hub, and tokenizer threads would compete with torch's.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SINGLE_TASKS = "vuln-sysevr=vulnerability@devign-sysevr"
MULTI_TASKS = (
    "vuln-chrome=vulnerability@reveal-chrome,vuln-sysevr=vulnerability@devign-sysevr,"
    "clone=clone@bigclonebench,flaky=flaky@flakeflagger"
)
FLOPS_FORMULA = (
    "per training pass and position: dense = 4*N_frozen + 6*N_train (2N forward, 2N activation gradients, "
    "2*N_train weight gradients; N = matmul weights of the transformer layers); attention = "
    "12*layers*hidden*T per position of a sequence of T positions. Model FLOPs: real tokens only "
    "(sum over sequences of l*dense + 12*layers*hidden*l^2); hardware FLOPs: every computed position "
    "(padded width). Elementwise ops, embeddings, pooler and heads excluded; layer 0's Q/K/V input "
    "gradients (skipped by autograd) included, a ~1/(8*layers) overcount. MFU = model FLOPs / training-step "
    "wall time / measured fp32 matmul rate of the model's shape mix."
)


# ---- what runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str
    pipeline: str  # "mtpeft" | "trainer"
    sampling: str  # "length-grouped" | "random"
    padding: str  # "dynamic" | "max-length"
    role: str  # "headline" | "peer" | "ablation"
    description: str
    # The backbone's own dropout (hidden and attention) while training; None keeps the model's. Headline
    # rows are compared with the best peer of the same dropout, so a setting is never credited with it.
    dropout: float | None = None
    # mtpeft's `batch_tokens`: each task's batches filled to the positions of `batch_size` examples at
    # max length (every input counted), so no batch is larger than the fixed-size setting's largest.
    token_budget: bool = False


SETTINGS: dict[str, tuple[Setting, ...]] = {
    "single": (
        Setting("mtpeft", "mtpeft", "length-grouped", "dynamic", "headline", "mtpeft train (single task)"),
        Setting("trainer-random", "trainer", "random", "dynamic", "peer", "Trainer + peft, random batches"),
        Setting(
            "trainer-grouped",
            "trainer",
            "length-grouped",
            "dynamic",
            "peer",
            'Trainer + peft, train_sampling_strategy="group_by_length"',
        ),
        Setting(
            "trainer-pad-to-max",
            "trainer",
            "random",
            "max-length",
            "peer",
            "Trainer + peft, padded to max length (the replication code's way)",
        ),
        Setting(
            "mtpeft-no-dropout",
            "mtpeft",
            "length-grouped",
            "dynamic",
            "headline",
            "mtpeft train, backbone_dropout: 0",
            dropout=0.0,
        ),
        Setting(
            "trainer-grouped-no-dropout",
            "trainer",
            "length-grouped",
            "dynamic",
            "peer",
            "Trainer + peft, group_by_length, the model's dropout set to 0",
            dropout=0.0,
        ),
        Setting(
            "mtpeft-no-dropout-token-budget",
            "mtpeft",
            "length-grouped",
            "dynamic",
            "headline",
            "mtpeft train, backbone_dropout: 0, batch_tokens: batch size x max length",
            dropout=0.0,
            token_budget=True,
        ),
        Setting(
            "mtpeft-pad-to-max",
            "mtpeft",
            "random",
            "max-length",
            "ablation",
            "ablation: mtpeft's loop, no length grouping, padded to max length",
        ),
    ),
    "multi": (
        Setting(
            "mtpeft-shared", "mtpeft", "length-grouped", "dynamic", "headline", "mtpeft, one shared LoRA"
        ),
        Setting(
            "trainer-random-sequential",
            "trainer",
            "random",
            "dynamic",
            "peer",
            "one Trainer + peft run per task, random batches",
        ),
        Setting(
            "trainer-grouped-sequential",
            "trainer",
            "length-grouped",
            "dynamic",
            "peer",
            "one Trainer + peft run per task, group_by_length",
        ),
        Setting(
            "mtpeft-shared-no-dropout",
            "mtpeft",
            "length-grouped",
            "dynamic",
            "headline",
            "mtpeft, one shared LoRA, backbone_dropout: 0",
            dropout=0.0,
        ),
        Setting(
            "trainer-grouped-sequential-no-dropout",
            "trainer",
            "length-grouped",
            "dynamic",
            "peer",
            "one Trainer + peft run per task, group_by_length, the model's dropout set to 0",
            dropout=0.0,
        ),
        Setting(
            "mtpeft-shared-no-dropout-token-budget",
            "mtpeft",
            "length-grouped",
            "dynamic",
            "headline",
            "mtpeft, one shared LoRA, backbone_dropout: 0, batch_tokens: batch size x max length",
            dropout=0.0,
            token_budget=True,
        ),
    ),
}


@dataclass(frozen=True)
class TaskRef:
    """One task of the benchmark: its label in results, the mtpeft task, the data folder under --data."""

    name: str
    task: str
    folder: str


def parse_tasks(text: str) -> list[TaskRef]:
    """`name=task@folder,...` (e.g. `vuln-sysevr=vulnerability@devign-sysevr`)."""
    refs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, rest = item.partition("=")
        task, at, folder = rest.partition("@")
        if not (eq and at and name and task and folder):
            raise argparse.ArgumentTypeError(f"expected name=task@folder, got {item!r}")
        refs.append(TaskRef(name.strip(), task.strip(), folder.strip()))
    if not refs:
        raise argparse.ArgumentTypeError("no tasks given")
    return refs


def parse_lengths(text: str) -> dict[int, int]:
    """`128:100,512:40` -> {max_length: optimiser steps}."""
    lengths = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        length, colon, steps = item.partition(":")
        try:
            lengths[int(length)] = int(steps)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected max_length:steps, got {item!r}") from None
        if not colon or int(length) < 8 or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"expected max_length>=8:steps>=1, got {item!r}")
    return lengths


@dataclass
class Bench:
    """Everything every setting shares (sent to each child process as JSON)."""

    model: str
    data: str
    single: list[TaskRef]
    multi: list[TaskRef]
    batch_size: int
    train_examples: int
    valid_examples: int
    eval_batch_size: int
    lr: float
    seed: int
    pooling: str
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    threads: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bench:
        refs = {key: [TaskRef(**ref) for ref in data[key]] for key in ("single", "multi")}
        return cls(**(data | refs))

    def tasks(self, case: str) -> list[TaskRef]:
        return self.single if case == "single" else self.multi


# ---- counting what the model computes -----------------------------------------------------------------


@dataclass
class TokenCounter:
    """Real tokens and computed positions of every training forward pass of one backbone.

    A forward pre-hook on the transformers base model (BertModel for both pipelines), so both are counted
    by the same code at the same place; passes in eval mode or without grad (validation) are skipped.
    """

    tokens: int = 0
    positions: int = 0
    sequences: int = 0
    forwards: int = 0
    real_sq: int = 0  # sum of l^2 over sequences: attention work on real tokens
    padded_sq: int = 0  # sum of T^2 over sequences: attention work as computed
    by_task: dict[str, int] = field(default_factory=dict)
    task: str = "?"  # which task the next forward belongs to (set by the pipeline wrapper)

    def hook(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        import torch

        if not (module.training and torch.is_grad_enabled()):
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is None:
            mask = torch.ones_like(ids)
        rows, width = mask.shape
        lengths = mask.sum(dim=1).tolist()
        real = int(sum(lengths))
        self.tokens += real
        self.positions += rows * width
        self.sequences += rows
        self.forwards += 1
        self.real_sq += int(sum(length * length for length in lengths))
        self.padded_sq += rows * width * width
        self.by_task[self.task] = self.by_task.get(self.task, 0) + real

    def merged(self, other: TokenCounter) -> TokenCounter:
        total = TokenCounter()
        for name in ("tokens", "positions", "sequences", "forwards", "real_sq", "padded_sq"):
            setattr(total, name, getattr(self, name) + getattr(other, name))
        total.by_task = dict(self.by_task)
        for task, tokens in other.by_task.items():
            total.by_task[task] = total.by_task.get(task, 0) + tokens
        return total

    def report(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "task"}


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs formula needs of a model (read from the adapted model itself)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    frozen_matmul_params: int
    trainable_matmul_params: int

    @property
    def dense_per_position(self) -> int:
        return 4 * self.frozen_matmul_params + 6 * self.trainable_matmul_params

    def model_flops(self, counter: TokenCounter) -> float:
        attention = 12 * self.layers * self.hidden
        return float(counter.tokens * self.dense_per_position + attention * counter.real_sq)

    def hardware_flops(self, counter: TokenCounter) -> float:
        attention = 12 * self.layers * self.hidden
        return float(counter.positions * self.dense_per_position + attention * counter.padded_sq)


def base_model_class(config: Any) -> type:
    """The transformers class AutoModel builds for `config` (BertModel for BERT configs)."""
    from transformers import MODEL_MAPPING

    return MODEL_MAPPING[type(config)]


def find_base_model(model: Any) -> Any:
    """The transformers base model inside any wrapper (peft, a sequence-classification model, mtpeft)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and type(module) is base_model_class(config):
            return module
    raise ValueError(f"no transformers base model inside {type(model).__name__}")


def model_shape(base: Any) -> ModelShape:
    """Layer dimensions and the matmul weights of the transformer layers, split frozen / trainable."""
    from torch import nn

    config = base.config
    frozen = trainable = 0
    for name, module in base.named_modules():
        # Only the repeated layers: embeddings are lookups, the pooler runs once per sequence.
        if isinstance(module, nn.Linear) and (".layer." in f".{name}" or ".layers." in f".{name}"):
            if module.weight.requires_grad:
                trainable += module.weight.numel()
            else:
                frozen += module.weight.numel()
    return ModelShape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        heads=config.num_attention_heads,
        frozen_matmul_params=frozen,
        trainable_matmul_params=trainable,
    )


# ---- scoring: one function for every setting ----------------------------------------------------------


def score(
    predict: Callable[[list[Any]], list[int]], examples: list[Any], batch_size: int
) -> dict[str, float]:
    """Accuracy and F1 of label 1 over `examples`, predicted in fixed batches of `batch_size` in file order.

    The same examples, batches and metric code for every setting: differences are the training.
    """
    import torch

    predicted: list[int] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            predicted += predict(examples[start : start + batch_size])
    gold = [ex.label for ex in examples]
    hits = sum(p == g for p, g in zip(predicted, gold, strict=True))
    true_pos = sum(p == g == 1 for p, g in zip(predicted, gold, strict=True))
    precision = true_pos / max(1, sum(p == 1 for p in predicted))
    recall = true_pos / max(1, sum(g == 1 for g in gold))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": hits / max(1, len(examples)), "f1": f1, "examples": len(examples)}


# ---- the mtpeft side ----------------------------------------------------------------------------------


def mtpeft_config(bench: Bench, case: str, setting: Setting, max_length: int, steps: int, workspace: Path):
    from mtpeft.config import validate_config

    grouped = setting.sampling == "length-grouped"
    return validate_config(
        {
            "name": f"peer-{case}-{setting.name}-{max_length}",
            "model": bench.model,
            "method": "lora",
            "method_options": {"r": bench.lora_r, "alpha": bench.lora_alpha, "dropout": bench.lora_dropout},
            "pooling": bench.pooling,
            "tasks": [
                task_entry(bench, ref, max_length, token_budget=setting.token_budget)
                for ref in bench.tasks(case)
            ],
            "schedule": "round-robin",
            "loss_weighting": "equal",
            "lr": bench.lr,
            "warmup_ratio": bench.warmup_ratio,
            "max_grad_norm": bench.max_grad_norm,
            "max_steps": steps,
            "eval_every": steps,  # validation at the end only
            "save_every": steps,  # no intermediate checkpoint
            "seed": bench.seed,
            "workspace": str(workspace),
            "length_grouping": grouped,
            "dynamic_padding": setting.padding == "dynamic",
            "evaluate_splits": [],
            "baselines": False,
        }
        | ({} if setting.dropout is None else {"backbone_dropout": setting.dropout})
    )


def task_entry(bench: Bench, ref: TaskRef, max_length: int, *, token_budget: bool = False) -> dict[str, Any]:
    entry = {
        "task": ref.task,
        "name": ref.name,
        "data": str(Path(bench.data) / ref.folder),
        "batch_size": bench.batch_size,
        "eval_batch_size": bench.eval_batch_size,
        "max_length": max_length,
        "max_train_examples": bench.train_examples,
        "max_eval_examples": bench.valid_examples,
    }
    if token_budget:
        entry["batch_tokens"] = bench.batch_size * widest_example(entry)
    return entry


def widest_example(entry: dict[str, Any]) -> int:
    """Positions of the task's longest possible example: each input role at its own max length."""
    from mtpeft.config import TaskEntry
    from mtpeft.tasks import get_task
    from mtpeft.tasks.kinds import kind_of
    from mtpeft.tasks.kinds.base import MAX_LENGTH_FIELD

    task = TaskEntry(**entry)
    return sum(getattr(task, MAX_LENGTH_FIELD[role]) for role in kind_of(get_task(task.task)).inputs)


def load_examples(bench: Bench, ref: TaskRef, max_length: int, split: str) -> list[Any]:
    """The examples mtpeft itself trains / validates on (same reader, same seeded subset): both pipelines
    get exactly these."""
    from mtpeft.config import TaskEntry
    from mtpeft.modeling.task_data import RunTask
    from mtpeft.tasks import get_task

    spec = get_task(ref.task).with_name(ref.name)
    run_task = RunTask(ref.name, spec, TaskEntry(**task_entry(bench, ref, max_length)))
    return run_task.examples(split, seed=bench.seed)


@dataclass
class MtpeftProbe:
    """Measures a `run_training` call from the outside by wrapping MultiTaskTrainer methods (restored after):
    the trainer instance and its optimiser, the token counter hook, the training-step window and
    validation time."""

    counter: TokenCounter = field(default_factory=TokenCounter)
    trainer: Any = None
    optimizer: Any = None
    first_step: float | None = None
    last_step_end: float | None = None
    validate_s: float = 0.0

    @contextmanager
    def attached(self) -> Iterator[MtpeftProbe]:
        from mtpeft.modeling.model import MultiTaskModel
        from mtpeft.training.trainer import MultiTaskTrainer

        probe = self
        original_train, original_step = MultiTaskTrainer.train, MultiTaskTrainer._step
        original_validate, original_forward = MultiTaskTrainer._validate, MultiTaskModel.forward
        original_optimizer = MultiTaskTrainer._optimizer

        def optimizer(trainer: Any) -> Any:
            probe.optimizer = original_optimizer(trainer)
            return probe.optimizer

        def train(trainer: Any, *, resume: bool) -> Any:
            probe.trainer = trainer
            handle = find_base_model(trainer.backbone.model).register_forward_pre_hook(
                probe.counter.hook, with_kwargs=True
            )
            try:
                return original_train(trainer, resume=resume)
            finally:
                handle.remove()

        def step(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            probe.first_step = probe.first_step or started
            out = original_step(trainer, *args, **kwargs)
            probe.last_step_end = time.perf_counter()
            return out

        def validate(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original_validate(trainer, *args, **kwargs)
            finally:
                probe.validate_s += time.perf_counter() - started

        def forward(model: Any, task: str, batch: Any) -> Any:
            probe.counter.task = task  # attributes the backbone passes of this call to its task
            return original_forward(model, task, batch)

        MultiTaskTrainer.train, MultiTaskTrainer._step = train, step
        MultiTaskTrainer._validate, MultiTaskModel.forward = validate, forward
        MultiTaskTrainer._optimizer = optimizer
        try:
            yield self
        finally:
            MultiTaskTrainer.train, MultiTaskTrainer._step = original_train, original_step
            MultiTaskTrainer._validate, MultiTaskModel.forward = original_validate, original_forward
            MultiTaskTrainer._optimizer = original_optimizer

    @property
    def train_steps_s(self) -> float:
        if self.first_step is None or self.last_step_end is None:
            return 0.0
        return self.last_step_end - self.first_step


def run_mtpeft(bench: Bench, case: str, setting: Setting, max_length: int, steps: int, work: Path) -> dict:
    from mtpeft.training.run import run_training

    config = mtpeft_config(bench, case, setting, max_length, steps, work)
    probe = MtpeftProbe()
    started = time.perf_counter()
    with probe.attached():
        result = run_training(config, progress=False)[0]
    total = time.perf_counter() - started
    peak = peak_rss_bytes()
    trainer = probe.trainer
    model = trainer.accelerator.unwrap_model(trainer.model)
    base = find_base_model(trainer.backbone.model)
    valid = {}
    for ref in bench.tasks(case):
        examples = load_examples(bench, ref, max_length, "valid")
        valid[ref.name] = score(
            mtpeft_predictor(model, trainer.tasks[ref.name], trainer.backbone.tokenizer, trainer.pad_id),
            examples,
            bench.eval_batch_size,
        )
    cost = result.cost
    return {
        "counter": probe.counter,
        "shape": model_shape(base),
        "train_steps_s": probe.train_steps_s,
        "total_s": total,
        "peak_rss_bytes": peak,
        "valid": valid,
        "pipeline_own": {
            # mtpeft's own cost report: its wall time includes the validation pass inside the loop.
            "tokens": cost["tokens"],
            "padded_positions": cost["padded_tokens"],
            "wall_time_s": cost["wall_time_s"],
            "tokens_per_s": cost["tokens_per_s"],
            "validation_s": probe.validate_s,
            "valid_metrics": result.metrics.get("valid", {}),
            "optimizer": optimizer_label(probe.optimizer),
        },
    }


def mtpeft_predictor(
    model: Any, run_task: Any, tokenizer: Any, pad_id: int
) -> Callable[[list[Any]], list[int]]:
    """mtpeft's own input path (tokenize_task, collate) and forward (MultiTaskModel.predict)."""
    from mtpeft.modeling.inputs import collate, to_device, tokenize_task

    device = next(model.parameters()).device

    def predict(examples: list[Any]) -> list[int]:
        model.eval()
        features = tokenize_task(run_task.spec, run_task.entry, examples, tokenizer)
        batch = to_device(collate(features, list(range(len(examples))), pad_id), device)
        return model.predict(run_task.name, batch)["y_pred"].tolist()

    return predict


# ---- the Trainer + peft side --------------------------------------------------------------------------


class EncodedDataset:
    """A map-style dataset of tokenised examples (what a user builds for Trainer without `datasets`)."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: list[int]) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: values[index] for key, values in self.encodings.items()} | {"labels": self.labels[index]}


def hf_model_source(name: str) -> tuple[str, Any]:
    """(tokenizer folder, random-init config or None) for a short mtpeft model name, hub id or folder."""
    from mtpeft.models.registry import MODELS

    entry = MODELS.get(name)
    if entry is None:
        return name, None
    return entry.loader(), entry.random_init() if entry.random_init is not None else None


def build_hf_model(bench: Bench, num_labels: int, dropout: float | None = None) -> tuple[Any, Any]:
    """(tokenizer, peft model): AutoModelForSequenceClassification + LoraConfig(SEQ_CLS), as users do.

    dropout: the model's own dropout set before LoRA is added (what `backbone_dropout` does in mtpeft).
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from mtpeft.models.architectures import default_lora_targets

    folder, random_config = hf_model_source(bench.model)
    set_seed(bench.seed)  # the new classifier and LoRA's A matrices are randomly initialised
    if random_config is not None:
        random_config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(random_config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if dropout is not None:
        from mtpeft.models.dropout import set_backbone_dropout

        set_backbone_dropout(model, dropout)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=bench.lora_r,
        lora_alpha=bench.lora_alpha,
        lora_dropout=bench.lora_dropout,
        target_modules=default_lora_targets(model.config),
    )
    with warnings.catch_warnings():  # peft probes a deprecated transformers property; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return tokenizer, get_peft_model(model, lora)


def hf_encode(tokenizer: Any, examples: list[Any], max_length: int, *, pad_to_max: bool) -> dict[str, Any]:
    """Pairs as one cross-encoded sequence truncated to max_length (what AutoModelForSequenceClassification
    expects); mtpeft bi-encodes them, each snippet up to max_length, so pair tasks see fewer tokens here."""
    texts = [ex.code for ex in examples]
    pairs = [ex.code_b for ex in examples] if examples and examples[0].code_b is not None else None
    padding = "max_length" if pad_to_max else False
    return dict(tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=padding))


def hf_predictor(model: Any, tokenizer: Any, max_length: int) -> Callable[[list[Any]], list[int]]:
    def predict(examples: list[Any]) -> list[int]:
        model.eval()
        encoded = hf_encode(tokenizer, examples, max_length, pad_to_max=False)
        batch = tokenizer.pad(encoded, return_tensors="pt").to(model.device)
        return model(**batch).logits.argmax(-1).tolist()

    return predict


def run_trainer(bench: Bench, case: str, setting: Setting, max_length: int, steps: int, work: Path) -> dict:
    """One Trainer + peft run per task of the case, one after the other (a single task: one run)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    counter, train_steps, valid, peak, optimizers = TokenCounter(), 0.0, {}, 0, set()
    own_eval: dict[str, dict[str, float]] = {}
    total_outside_scoring = 0.0
    for ref in bench.tasks(case):
        task_started = time.perf_counter()
        run = train_one_with_trainer(bench, setting, ref, max_length, steps, work / ref.name)
        total_outside_scoring += time.perf_counter() - task_started
        peak = max(peak, peak_rss_bytes())
        counter = counter.merged(run["counter"])
        train_steps += run["train_steps_s"]
        optimizers.add(run["optimizer"])
        own_eval[ref.name] = run["own_eval"]
        valid[ref.name] = score(
            hf_predictor(run["model"], run["tokenizer"], max_length),
            load_examples(bench, ref, max_length, "valid"),
            bench.eval_batch_size,
        )
        shape = model_shape(find_base_model(run["model"]))
        del run  # free this task's model before the next one is built
    return {
        "counter": counter,
        "shape": shape,
        "train_steps_s": train_steps,
        "total_s": total_outside_scoring,
        "peak_rss_bytes": peak,
        "valid": valid,
        "pipeline_own": {"optimizer": ", ".join(sorted(optimizers)), "valid_metrics": own_eval},
    }


def train_one_with_trainer(
    bench: Bench, setting: Setting, ref: TaskRef, max_length: int, steps: int, out_dir: Path
) -> dict[str, Any]:
    import torch
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from mtpeft.tasks import get_task

    spec = get_task(ref.task)
    tokenizer, model = build_hf_model(bench, num_labels=len(spec.labels or [0, 1]), dropout=setting.dropout)
    pad_to_max = setting.padding == "max-length"
    train = load_examples(bench, ref, max_length, "train")
    valid = load_examples(bench, ref, max_length, "valid")
    train_set = EncodedDataset(
        hf_encode(tokenizer, train, max_length, pad_to_max=pad_to_max), [e.label for e in train]
    )
    valid_set = EncodedDataset(
        hf_encode(tokenizer, valid, max_length, pad_to_max=False), [e.label for e in valid]
    )
    counter = TokenCounter(task=ref.name)
    find_base_model(model).register_forward_pre_hook(counter.hook, with_kwargs=True)
    window: dict[str, float] = {}
    cuda = torch.cuda.is_available()

    class StepWindow(TrainerCallback):
        """Training-step wall time: from the loop's start to the end of the last optimiser step."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            window["begin"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            window["end"] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=bench.batch_size,
        per_device_eval_batch_size=bench.eval_batch_size,
        max_steps=steps,
        learning_rate=bench.lr,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        warmup_steps=int(bench.warmup_ratio * steps),  # mtpeft's rounding of the same ratio
        max_grad_norm=bench.max_grad_norm,
        seed=bench.seed,
        train_sampling_strategy="group_by_length" if setting.sampling == "length-grouped" else "random",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not cuda,
    )

    def accuracy(prediction: Any) -> dict[str, float]:
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=valid_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        callbacks=[StepWindow()],
    )
    trainer.remove_callback(PrinterCallback)  # its metric lines would interleave with the table on stdout
    trainer.train()
    own_eval = trainer.evaluate()  # the end-of-training validation a user runs (mtpeft runs its own)
    trainer.save_model(str(out_dir / "model"))
    return {
        "counter": counter,
        "train_steps_s": window["end"] - window["begin"],
        "model": model,
        "tokenizer": tokenizer,
        # Trainer's optimiser is accelerate's wrapper; the torch optimiser inside is what runs.
        "optimizer": f"{optimizer_label(trainer.optimizer)} (optim={args.optim})",
        "own_eval": own_eval,
    }


def optimizer_label(optimizer: Any) -> str:
    """The torch optimiser and the kernel path it takes (fused, foreach or the per-tensor loop)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    defaults = inner.defaults
    if defaults.get("fused"):
        path = "fused"
    elif defaults.get("foreach") is None:
        path = "torch's default: foreach on CUDA, per-tensor loop on CPU"
    else:
        path = "foreach" if defaults["foreach"] else "per-tensor loop"
    return f"{type(inner).__name__} ({path})"


# ---- profile: where mtpeft's time goes ----------------------------------------------------------------

# Phases measured by record_function ranges wrapped around mtpeft's own functions from the outside:
# (phase, module, attribute path). Private names: if mtpeft renames one, it is listed under
# `not_attributed` in the JSON and its time falls into "bookkeeping".
PROFILE_PHASES = (
    ("preflight", "mtpeft.training.run", "preflight"),
    ("setup: model load, PEFT, heads", "mtpeft.training.trainer", "MultiTaskTrainer.__init__"),
    (
        "tokenisation (all train + valid examples)",
        "mtpeft.training.trainer",
        "MultiTaskTrainer._load_features",
    ),
    ("batch sampling", "mtpeft.training.batching", "TaskBatcher.next"),
    ("collation", "mtpeft.training.trainer", "collate"),
    ("collation", "mtpeft.training.trainer", "to_device"),
    ("forward + loss", "mtpeft.modeling.model", "MultiTaskModel.forward"),
    ("backward", "accelerate", "Accelerator.backward"),
    ("gradient clipping", "accelerate", "Accelerator.clip_grad_norm_"),
    ("optimiser step + zero_grad", "accelerate.optimizer", "AcceleratedOptimizer.step"),
    ("optimiser step + zero_grad", "accelerate.optimizer", "AcceleratedOptimizer.zero_grad"),
    ("memory sampling", "mtpeft.training.cost", "CostMeter.sample_memory"),
    ("evaluation (validation pass)", "mtpeft.training.trainer", "MultiTaskTrainer._validate"),
    ("saving best/", "mtpeft.training.trainer", "MultiTaskTrainer.save_deployable"),
    ("data-quality report", "mtpeft.training.run", "_data_quality"),
    ("train()", "mtpeft.training.trainer", "MultiTaskTrainer.train"),
)


def _in_range(label: str, original: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    from torch.autograd.profiler import record_function

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return original(*args, **kwargs)

    return wrapped


@contextmanager
def phase_ranges() -> Iterator[list[str]]:
    """Wrap each PROFILE_PHASES function in a record_function range named after its phase (restored after);
    yields the functions that were not found."""
    import importlib

    patched, missing = [], []
    for label, module_name, path in PROFILE_PHASES:
        *owner_path, attribute = path.split(".")
        owner: Any = importlib.import_module(module_name)
        for part in owner_path:
            owner = getattr(owner, part, None)
        # A class's own attribute only: wrapping an inherited one would patch it on the subclass.
        original = (
            (owner.__dict__ if isinstance(owner, type) else vars(owner)).get(attribute) if owner else None
        )
        if original is None:
            missing.append(f"{module_name}.{path}")
            continue
        setattr(owner, attribute, _in_range(label, original))
        patched.append((owner, attribute, original))
    try:
        yield missing
    finally:
        for owner, attribute, original in reversed(patched):
            setattr(owner, attribute, original)


def profile_target(requested: str | None, cases: list[str]) -> tuple[str, str] | None:
    """(case, setting) that --profile names: a setting of any case (its case found here), or with no
    name the first selected case's plain mtpeft setting. None without --profile."""
    if requested is None:
        return None
    if not requested:
        case = cases[0]
        return case, next(s.name for s in SETTINGS[case] if s.pipeline == "mtpeft")
    for case, settings in SETTINGS.items():
        for setting in settings:
            if setting.name == requested:
                if setting.pipeline != "mtpeft":
                    raise SystemExit(f"--profile {requested}: only mtpeft settings are profiled")
                return case, setting.name
    known = sorted(s.name for settings in SETTINGS.values() for s in settings if s.pipeline == "mtpeft")
    raise SystemExit(f"--profile {requested}: unknown setting; mtpeft settings: {', '.join(known)}")


def run_profile(
    bench: Bench, case: str, setting: Setting, max_length: int, steps: int, work: Path
) -> dict[str, Any]:
    """One mtpeft run under torch.profiler; time by phase (seconds, % of the run) and top ops."""
    from torch.profiler import ProfilerActivity, profile

    from mtpeft.training.run import run_training

    config = mtpeft_config(bench, case, setting, max_length, steps, work)
    started = time.perf_counter()
    with phase_ranges() as missing, profile(activities=[ProfilerActivity.CPU]) as prof:
        run_training(config, progress=False)
    wall = time.perf_counter() - started
    events = prof.key_averages()
    inclusive: dict[str, float] = {}
    labels = {label for label, _, _ in PROFILE_PHASES}
    for event in events:
        if event.key in labels:
            inclusive[event.key] = inclusive.get(event.key, 0.0) + event.cpu_time_total / 1e6
    phases = phase_table(inclusive, wall)
    for phase in phases:  # per optimiser step: what a change to one step's work would save
        phase["ms_per_step"] = 1000 * phase["seconds"] / steps
    top = sorted((e for e in events if e.key not in labels), key=lambda e: -e.self_cpu_time_total)[:15]
    return {
        "case": case,
        "setting": setting.name,
        "max_length": max_length,
        "steps": steps,
        "wall_s": wall,
        "phases": phases,
        "top_ops_by_self_time": [
            {
                "op": e.key,
                "calls": e.count,
                "self_s": e.self_cpu_time_total / 1e6,
                "percent_of_run": 100 * e.self_cpu_time_total / 1e6 / wall,
            }
            for e in top
        ],
        "not_attributed": missing,
        "method": (
            "record_function ranges wrapped around mtpeft functions from outside (benchmark-side patching); "
            "bookkeeping = train() minus its measured phases (per-step log lines, loss.item(), scheduler, "
            "tqdm, the loop itself); orchestration = the run minus everything else (store, run directory, "
            "config and cost files). Both pipelines' modules are imported before the run, but first-use "
            "imports inside mtpeft (e.g. a data reader) land in the phase that triggers them. Profiler "
            "overhead (a few microseconds per op) inflates phases made of many small ops."
        ),
    }


def phase_table(inclusive: dict[str, float], wall: float) -> list[dict[str, Any]]:
    """Exclusive seconds per phase from the ranges' inclusive times (phases nest in train() and _validate)."""
    seconds = dict(inclusive)
    seconds["evaluation (validation pass)"] = seconds.get("evaluation (validation pass)", 0.0) - seconds.get(
        "saving best/", 0.0
    )
    in_train = (
        "tokenisation (all train + valid examples)",
        "batch sampling",
        "collation",
        "forward + loss",
        "backward",
        "gradient clipping",
        "optimiser step + zero_grad",
        "memory sampling",
        "evaluation (validation pass)",
        "saving best/",
    )
    train = seconds.pop("train()", 0.0)
    seconds["bookkeeping in the training loop"] = max(0.0, train - sum(seconds.get(k, 0.0) for k in in_train))
    outside = ("preflight", "setup: model load, PEFT, heads", "data-quality report")
    seconds["run orchestration (store, files)"] = max(
        0.0, wall - train - sum(seconds.get(k, 0.0) for k in outside)
    )
    return [
        {"phase": name, "seconds": value, "percent": 100 * value / wall if wall else 0.0}
        for name, value in sorted(seconds.items(), key=lambda item: -item[1])
    ]


# ---- one setting (in a child process) -----------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _preimport() -> None:
    """Import both pipelines before any timer starts: imports are a per-process cost (seconds here, e.g.
    scikit-learn through mtpeft's metrics), not the work being compared."""
    import peft  # noqa: F401
    import transformers.trainer  # noqa: F401

    import mtpeft.evaluation.metrics  # noqa: F401
    import mtpeft.training.run  # noqa: F401


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one setting (or the profile) and return its JSON-ready result."""
    import torch

    bench = Bench.from_json(job["bench"])
    _preimport()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    setting = next(s for s in SETTINGS[job["case"]] if s.name == job["setting"])
    max_length, steps = job["max_length"], job["steps"]
    with tempfile.TemporaryDirectory(prefix="peer-compare-") as tmp:
        if job.get("profile"):
            return {"profile": run_profile(bench, job["case"], setting, max_length, steps, Path(tmp))}
        runner = run_mtpeft if setting.pipeline == "mtpeft" else run_trainer
        raw = runner(bench, job["case"], setting, max_length, steps, Path(tmp))
    counter: TokenCounter = raw.pop("counter")
    shape: ModelShape = raw.pop("shape")
    valid = raw["valid"]
    return {
        "case": job["case"],
        "setting": setting.name,
        "description": setting.description,
        "role": setting.role,
        "dropout": setting.dropout,
        "pipeline": setting.pipeline,
        "sampling": setting.sampling,
        "padding": setting.padding,
        "max_length": max_length,
        "steps_per_task": steps,
        "tasks": [ref.name for ref in bench.tasks(job["case"])],
        "repeat": job["repeat"],
        **raw,
        "valid_mean_accuracy": statistics.fmean(v["accuracy"] for v in valid.values()),
        "tokens": counter.tokens,
        "positions": counter.positions,
        "tokens_by_task": counter.by_task,
        "padding_fraction": 1 - counter.tokens / counter.positions if counter.positions else 0.0,
        "tokens_per_s": counter.tokens / raw["train_steps_s"] if raw["train_steps_s"] > 0 else 0.0,
        "counter": counter.report(),
        "model_shape": asdict(shape),
        "model_flops": shape.model_flops(counter),
        "hardware_flops": shape.hardware_flops(counter),
        "torch_threads": torch.get_num_threads(),
    }


def worker_main(spec_path: str, out_path: str) -> None:
    job = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = run_job(job)
    Path(out_path).write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")


def run_isolated(job: dict[str, Any], scratch: Path, index: int) -> dict[str, Any]:
    """The job in a fresh `python peer_compare.py --worker` process; its stderr goes to a log file."""
    spec, out, log = (scratch / f"job-{index}.{ext}" for ext in ("json", "out.json", "log"))
    spec.write_text(json.dumps(job), encoding="utf-8")
    with log.open("w", encoding="utf-8") as stream:
        code = subprocess.call(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec), str(out)],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    if code != 0 or not out.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{job['case']}/{job['setting']}@{job['max_length']} exited with {code}:\n{tail}")
    return json.loads(out.read_text(encoding="utf-8"))


# ---- the machine's limit ------------------------------------------------------------------------------


def matmul_shapes(shape: ModelShape, batch: int, length: int) -> list[dict[str, Any]]:
    """The model's matmuls at `length`, with the FLOPs each does per position of one training pass."""
    h, inner, rows = shape.hidden, shape.intermediate, batch * length
    head_dim = h // shape.heads
    return [
        # Q, K, V, O: forward and activation gradient, each [M, h] x [h, h].
        {"name": f"[{rows},{h}]x[{h},{h}]", "m": rows, "k": h, "n": h, "batch": 1, "flops": 8 * 2 * h * h},
        # FFN in forward / FFN out activation gradient.
        {
            "name": f"[{rows},{h}]x[{h},{inner}]",
            "m": rows,
            "k": h,
            "n": inner,
            "batch": 1,
            "flops": 2 * 2 * h * inner,
        },
        # FFN out forward / FFN in activation gradient.
        {
            "name": f"[{rows},{inner}]x[{inner},{h}]",
            "m": rows,
            "k": inner,
            "n": h,
            "batch": 1,
            "flops": 2 * 2 * h * inner,
        },
        # Attention scores QK^T (forward) and dP = dO V^T (backward).
        {
            "name": f"{batch * shape.heads}x[{length},{head_dim}]x[{head_dim},{length}]",
            "m": length,
            "k": head_dim,
            "n": length,
            "batch": batch * shape.heads,
            "flops": 2 * 2 * length * h,
        },
        # PV (forward) and dQ, dK, dV (backward).
        {
            "name": f"{batch * shape.heads}x[{length},{length}]x[{length},{head_dim}]",
            "m": length,
            "k": length,
            "n": head_dim,
            "batch": batch * shape.heads,
            "flops": 4 * 2 * length * h,
        },
    ]


def time_matmul(m: int, k: int, n: int, batch: int, seconds: float, device: str) -> float:
    """Best measured fp32 FLOP/s of a [batch,] [m, k] x [k, n] matmul (3 trials of ~seconds/3 each)."""
    import torch

    a = torch.randn(batch, m, k, device=device)
    b = torch.randn(batch, k, n, device=device)
    out = torch.empty(batch, m, n, device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: thread pool, caches, kernel selection
        torch.bmm(a, b, out=out)
    sync()
    iterations, elapsed = 1, 0.0
    while elapsed < seconds / 3:  # calibrate one trial to about a third of the budget
        iterations *= 2
        started = time.perf_counter()
        for _ in range(iterations):
            torch.bmm(a, b, out=out)
        sync()
        elapsed = time.perf_counter() - started
    best = min(_timed(lambda: torch.bmm(a, b, out=out), iterations, sync) for _ in range(3))
    return 2.0 * batch * m * k * n / best


def _timed(fn: Callable[[], Any], iterations: int, sync: Callable[[], None]) -> float:
    started = time.perf_counter()
    for _ in range(iterations):
        fn()
    sync()
    return (time.perf_counter() - started) / iterations


def machine_limit(shape: ModelShape, batch: int, length: int, seconds: float, device: str) -> dict[str, Any]:
    shapes = matmul_shapes(shape, batch, length)
    for item in shapes:
        item["flops_per_s"] = time_matmul(item["m"], item["k"], item["n"], item["batch"], seconds, device)
    return limit_of(shapes)


def limit_of(shapes: list[dict[str, Any]]) -> dict[str, Any]:
    """The rate of the model's matmul mix: total FLOPs over the time each shape's share takes."""
    total = sum(item["flops"] for item in shapes)
    time_needed = sum(item["flops"] / item["flops_per_s"] for item in shapes)
    return {
        "shapes": shapes,
        "mix_flops_per_s": total / time_needed,
        "best_shape_flops_per_s": max(item["flops_per_s"] for item in shapes),
    }


def reference_shape(bench: Bench) -> ModelShape:
    """The adapted model's shape, built the way the Trainer settings build it (cheap: weights load once)."""
    _, model = build_hf_model(bench, num_labels=2)
    return model_shape(find_base_model(model))


def limits_job(bench: Bench, shape: ModelShape, lengths: Sequence[int], seconds: float) -> dict[str, Any]:
    """The matmul micro-benchmark at every length, in this (otherwise idle) parent process."""
    import torch

    if bench.threads:
        torch.set_num_threads(bench.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "model_shape": asdict(shape),
        "by_length": {str(n): machine_limit(shape, bench.batch_size, n, seconds, device) for n in lengths},
    }


# ---- orchestration, results and the table -------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import peft
    import torch
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def plan(cases: Sequence[str], lengths: dict[int, int], repeats: int, only: set[str] | None) -> list[dict]:
    """Jobs in interleaved order: every setting once per repeat, the order rotated each repeat so no setting
    always runs first (after a quiet machine) or last."""
    jobs = []
    for repeat in range(repeats):
        for case in cases:
            settings = [s for s in SETTINGS[case] if only is None or s.name in only]
            for length, steps in lengths.items():
                shift = repeat % max(1, len(settings))
                for setting in settings[shift:] + settings[:shift]:
                    jobs.append(
                        {
                            "case": case,
                            "setting": setting.name,
                            "max_length": length,
                            "steps": steps,
                            "repeat": repeat,
                        }
                    )
    return jobs


def add_mfu(result: dict[str, Any], limits: dict[str, Any]) -> None:
    limit = limits["by_length"][str(result["max_length"])]["mix_flops_per_s"]
    seconds = result["train_steps_s"]
    result["model_flops_per_s"] = result["model_flops"] / seconds if seconds > 0 else 0.0
    result["mfu"] = result["model_flops_per_s"] / limit
    result["mfu_hardware"] = (result["hardware_flops"] / seconds if seconds > 0 else 0.0) / limit


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, length, setting): medians over repeats, in the settings' declared order."""
    rows = []
    for case, settings in SETTINGS.items():
        lengths = sorted({r["max_length"] for r in results if r["case"] == case})
        for length in lengths:
            for setting in settings:
                runs = [
                    r
                    for r in results
                    if r["case"] == case
                    and r["max_length"] == length
                    and r["setting"] == setting.name
                    and "error" not in r
                ]
                if not runs:
                    continue
                median = {
                    key: statistics.median(r[key] for r in runs)
                    for key in (
                        "tokens_per_s",
                        "train_steps_s",
                        "total_s",
                        "peak_rss_bytes",
                        "mfu",
                        "mfu_hardware",
                        "padding_fraction",
                        "valid_mean_accuracy",
                    )
                }
                rows.append(
                    {
                        "case": case,
                        "max_length": length,
                        "setting": setting.name,
                        "role": setting.role,
                        "description": setting.description,
                        "dropout": setting.dropout,
                        "repeats": len(runs),
                        "tokens_per_s_range": [
                            min(r["tokens_per_s"] for r in runs),
                            max(r["tokens_per_s"] for r in runs),
                        ],
                        **median,
                    }
                )
    for row in rows:  # mtpeft's headline against the best peer of the same case and length
        peers = [
            r
            for r in rows
            if r["case"] == row["case"]
            and r["max_length"] == row["max_length"]
            and r["role"] == "peer"
            and r.get("dropout") == row.get("dropout")
        ]
        if row["role"] == "headline" and peers:
            best = max(peers, key=lambda r: r["tokens_per_s"])
            row["vs_best_peer"] = {
                "setting": best["setting"],
                "speedup": row["tokens_per_s"] / best["tokens_per_s"],
                "accuracy_delta": row["valid_mean_accuracy"] - best["valid_mean_accuracy"],
            }
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | max length | setting | non-padding tokens/s | vs best Trainer | train steps (s) "
        "| total (s) | peak RSS (MiB) | valid accuracy | MFU | MFU incl. padding | padding share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = f"{row['vs_best_peer']['speedup']:.2f}x" if "vs_best_peer" in row else ""
        lines.append(
            f"| {row['case']} | {row['max_length']} | {row['description']} "
            f"| {row['tokens_per_s']:,.0f} | {speedup} | {row['train_steps_s']:.1f} | {row['total_s']:.1f} "
            f"| {row['peak_rss_bytes'] / 2**20:,.0f} | {row['valid_mean_accuracy']:.3f} "
            f"| {100 * row['mfu']:.1f}% | {100 * row['mfu_hardware']:.1f}% "
            f"| {100 * row['padding_fraction']:.1f}% |"
        )
    return "\n".join(lines)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_parent(job: dict[str, Any], isolate: bool, scratch: Path, index: int) -> dict[str, Any]:
    before = load_average()
    started = time.perf_counter()
    result = run_isolated(job, scratch, index) if isolate else run_job(job)
    result["load_average_before"], result["load_average_after"] = before, load_average()
    result["child_process_s"] = time.perf_counter() - started
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the task folders")
    parser.add_argument(
        "--single", type=parse_tasks, default=parse_tasks(SINGLE_TASKS), help="name=task@folder"
    )
    parser.add_argument(
        "--multi", type=parse_tasks, default=parse_tasks(MULTI_TASKS), help="name=task@folder,..."
    )
    parser.add_argument("--cases", default="single,multi", help="single, multi or both")
    parser.add_argument("--settings", default=None, help="only these settings (comma list), e.g. for a rerun")
    parser.add_argument(
        "--lengths",
        type=parse_lengths,
        default=parse_lengths("128:100,512:40"),
        help="max_length:steps,... (steps per task)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--valid-examples", type=int, default=200)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pooling", default="mean", help="mtpeft's pooling (mean: minilm's pre-training)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in every setting (default: torch's)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--bench-seconds", type=float, default=1.0, help="matmul micro-benchmark time per shape"
    )
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run settings in this process (faster start; peak RSS is then the process's)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="SETTING",
        help="also profile one mtpeft run at the first length: SETTING (any case's), else the first "
        "case's plain mtpeft setting",
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="with --profile: no comparison runs, only the profile"
    )
    parser.add_argument("--profile-steps", type=int, default=None, help="steps of the profiled run")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3])
        return 0
    args = parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {sorted(SETTINGS)}")
    only = set(args.settings.split(",")) if args.settings else None
    known = {s.name for case in cases for s in SETTINGS[case]}
    if only is not None and not only <= known:
        raise SystemExit(
            f"unknown setting(s) {sorted(only - known)} for cases {cases}; known: {sorted(known)}"
        )
    bench = Bench(
        model=args.model,
        data=str(args.data.resolve()),
        single=args.single,
        multi=args.multi,
        batch_size=args.batch_size,
        train_examples=args.train_examples,
        valid_examples=args.valid_examples,
        eval_batch_size=args.eval_batch_size,
        lr=args.lr,
        seed=args.seed,
        pooling=args.pooling,
        threads=args.threads,
    )
    profiled = profile_target(args.profile, cases)
    if args.profile_only and profiled is None:
        raise SystemExit("--profile-only needs --profile")
    jobs = [] if args.profile_only else plan(cases, args.lengths, args.repeats, only)
    out = args.out or RESULTS / f"peer_compare-{args.model}.json"
    started = time.perf_counter()
    load_at_start = load_average()
    shape = reference_shape(bench)
    limits_start = limits_job(bench, shape, list(args.lengths), args.bench_seconds)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peer-compare-jobs-") as scratch:
        for index, job in enumerate(jobs):
            job["bench"] = asdict(bench)
            label = f"[{index + 1}/{len(jobs)}] {job['case']} {job['setting']} @ {job['max_length']}"
            print(f"{label} ...", file=sys.stderr, flush=True)
            try:
                results.append(run_parent(job, args.isolate, Path(scratch), index))
            except Exception as err:  # noqa: BLE001 - one failed setting is reported, the others still run
                results.append(
                    {k: job[k] for k in ("case", "setting", "max_length", "repeat")} | {"error": str(err)}
                )
                print(f"{label} FAILED: {err}", file=sys.stderr, flush=True)
        profile = None
        if profiled is not None:
            length = next(iter(args.lengths))
            job = {
                "case": profiled[0],
                "setting": profiled[1],
                "max_length": length,
                "repeat": 0,
                "profile": True,
                "steps": args.profile_steps or args.lengths[length],
                "bench": asdict(bench),
            }
            print(f"profile: {profiled[0]} {profiled[1]} @ {length} ...", file=sys.stderr, flush=True)
            profile = run_parent(job, args.isolate, Path(scratch), len(jobs))["profile"]
    limits_end = limits_job(bench, shape, list(args.lengths), args.bench_seconds)
    limits = best_limits(limits_start, limits_end)
    for result in results:
        if "error" not in result:
            add_mfu(result, limits)
    rows = summarise(results)
    report = {
        "benchmark": "peer_compare",
        "model": args.model,
        "bench": asdict(bench),
        "lengths": {str(k): v for k, v in args.lengths.items()},
        "repeats": args.repeats,
        "isolated_processes": args.isolate,
        "machine": machine_info()
        | {"load_average_at_start": load_at_start, "load_average_at_end": load_average()},
        "flops_formula": FLOPS_FORMULA,
        "definitions": {
            "tokens_per_s": "non-padding tokens of training forward passes / training-step wall time",
            "train_steps_s": "first step start to last optimiser step end "
            "(no model load, tokenisation, validation)",
            "total_s": "model load + tokenisation + training + the pipeline's own validation + saving "
            "(imports excluded: done before timing in every setting)",
            "peak_rss_bytes": "ru_maxrss of the setting's process before scoring"
            if args.isolate
            else "ru_maxrss of the one process so far (not per setting: use isolation for memory)",
            "valid": "one scorer for every setting: accuracy and F1 of label 1, same examples and batches",
        },
        "machine_limit": {"start": limits_start, "end": limits_end, "used": limits},
        "summary": rows,
        "runs": results,
        "profile": profile,
        "wall_s": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(markdown_table(rows))
    if profile:
        print("\n| phase (profiled mtpeft run) | seconds | % |\n|---|---|---|")
        for phase in profile["phases"]:
            print(f"| {phase['phase']} | {phase['seconds']:.2f} | {phase['percent']:.1f}% |")
        print("\n| op (self time) | calls | seconds | % of the run |\n|---|---|---|---|")
        for op in profile["top_ops_by_self_time"][:10]:
            print(f"| {op['op']} | {op['calls']} | {op['self_s']:.2f} | {op['percent_of_run']:.1f}% |")
    print(f"\n-> {out} ({report['wall_s']:.0f} s)")
    return 1 if any("error" in r for r in results) else 0


def best_limits(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Per length and shape the better of the two measurements: the limit is the best the machine showed."""
    used = {"device": start["device"], "by_length": {}}
    for length, first in start["by_length"].items():
        shapes = []
        for a, b in zip(first["shapes"], end["by_length"][length]["shapes"], strict=True):
            shapes.append(a | {"flops_per_s": max(a["flops_per_s"], b["flops_per_s"])})
        used["by_length"][length] = limit_of(shapes)
    return used


if __name__ == "__main__":
    sys.exit(main())
