"""The training recipe: setup, train (checkpointed, resumable), select the best, evaluate, record.

Built on `accelerate` (device placement, DDP through `accelerate launch` or torchrun, mixed precision,
checkpoint state); FSDP is torch's `fully_shard`, applied by mtpeft (modeling/fsdp.py says why). The
multi-task loop itself is ours because no library schedules one task per micro-batch with per-task heads
and loss weights.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.disk import disk_full, folder_bytes, is_disk_full
from mtpeft.errors import ConfigError, MtpeftError, TrainingDiverged
from mtpeft.evaluation.evaluate import evaluate_task
from mtpeft.layout import BEST_DIR, STATE_FILE, checkpoint_dirs
from mtpeft.manifest import MANIFEST_FILE, manifest_problem, write_manifest
from mtpeft.modeling import fsdp
from mtpeft.modeling.build import build_model, save_deployable
from mtpeft.modeling.distributed import (
    LOSS_SHARE,
    SHARD_RANK,
    SHARD_SIZES,
    Shard,
    all_reduce_sum,
    barrier,
    cpu_only,
    gather_objects,
    global_loss,
)
from mtpeft.modeling.inputs import Batch, TaskFeatures, collate, padded_widths, to_device
from mtpeft.modeling.task_data import RunTask, resolve_tasks
from mtpeft.models.limits import position_limit
from mtpeft.training.affinity import AffinityLog, check_supported, lookahead, loss_factor, task_gradients
from mtpeft.training.batching import TaskBatcher
from mtpeft.training.cost import CostMeter
from mtpeft.training.grad_conflict import ConflictLog, TaskGradients
from mtpeft.training.loss_weighting import LossWeighting, StepLosses, build_weighting
from mtpeft.training.sampling import build_schedule
from mtpeft.training.token_loss import TOKEN_LOSSES
from mtpeft.training.tracking import Tracking, tracking_dir

KEPT_CHECKPOINTS = 2  # the newest and one to fall back to when the newest turns out damaged


@dataclass
class TrainState:
    """Everything beyond model/optimiser tensors needed to resume exactly where a run stopped."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    cursors: dict[str, dict[str, int]] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    grad_conflict: dict[str, Any] = field(default_factory=dict)  # ConflictLog.state_dict()
    affinity: dict[str, Any] = field(default_factory=dict)  # AffinityLog.state_dict()

    def save(self, directory: Path) -> None:
        (directory / STATE_FILE).write_text(json.dumps(self.__dict__, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> TrainState:
        return cls(**json.loads((directory / STATE_FILE).read_text(encoding="utf-8")))


@dataclass
class TrainOutcome:
    best_step: int | None
    best_score: float | None
    valid_metrics: dict[str, dict[str, float]]
    cost: dict[str, Any]
    stopped_early: bool
    grad_conflict: dict[str, Any] | None = None  # ConflictLog.summary(), when grad_conflict_every is set
    # Every validation: step, mean primary score, metrics per task, cumulative compute (and test metrics
    # with curve_test); the compute-to-quality curve (report/compute_curve.py).
    curve: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None  # AffinityLog.summary(), when `affinity` is set


_STEPS_IN_PROCESS = 0  # optimiser steps taken by this process, over every run it trains


def _fault_injection() -> None:
    """Test hooks, counted in optimiser steps of this process (a study trains several runs in one):
    MTPEFT_KILL_AT_STEP=N SIGKILLs the process after step N, like an OOM kill;
    MTPEFT_INTERRUPT_AT_STEP=N sends it SIGINT, like Ctrl-C;
    MTPEFT_FAULT_RANK=R: only the process of that rank (several processes)."""
    global _STEPS_IN_PROCESS
    _STEPS_IN_PROCESS += 1
    rank = os.environ.get("MTPEFT_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    faults = {"MTPEFT_KILL_AT_STEP": signal.SIGKILL, "MTPEFT_INTERRUPT_AT_STEP": signal.SIGINT}
    for variable, sig in faults.items():
        target = os.environ.get(variable)
        if target and int(target) == _STEPS_IN_PROCESS:
            os.kill(os.getpid(), sig)


def _longest_row(features: TaskFeatures) -> int:
    """The most tokens one sequence of the task puts through the backbone: a decoder's prompt + answer
    row, an encoder-decoder's prompt (T5-style models have no position table to overflow), an input."""
    if features.lm is not None:
        if features.lm.lm_head == "causal":
            return max(features.lengths, default=0)
        return max(map(len, features.lm.prompts), default=0)
    return max((len(row) for rows in features.sequences.values() for row in rows), default=0)


def _refuse_unsupported_sharding(accelerator: Accelerator) -> None:
    """DeepSpeed ZeRO could not be run here (accelerate selects it only without `cpu`), and its
    checkpoints and `best/` would need their own gathering: refused before anything trains. FSDP is
    mtpeft's own (modeling/fsdp.py), which took accelerate's switch over before the Accelerator was
    made; an FSDP distributed type here would mean accelerate shards the model a second time."""
    fsdp.refuse_deepspeed()
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED"):
        raise MtpeftError(
            f"{kind} set up by accelerate itself is not supported: for FSDP use `accelerate launch "
            "--use_fsdp` or `distributed: {sharding: fsdp}` (mtpeft shards the model), for DeepSpeed "
            "nothing yet; see docs/scaling.md"
        )


def _refuse_unsupported_with_fsdp(
    config: TrainConfig, settings: fsdp.FsdpSettings, tasks: dict[str, RunTask]
) -> None:
    """What FSDP does not take here, named before anything trains."""
    if config.mixed_precision == "fp16":
        raise ConfigError(
            f"mixed_precision: fp16 with FSDP ({settings.source}) is not supported (its loss scaler would "
            "need FSDP's sharded scaler): use bf16 or no",
            field="mixed_precision",
        )
    for position, entry in enumerate(config.tasks):
        if tasks[entry.label].spec.kind == "generation":
            # Generating runs as many forward passes as the longest answer needs, which differs per process.
            raise ConfigError(
                f"task {entry.label!r} generates text, which is not supported with FSDP ({settings.source}): "
                "train it without sharding",
                field=f"tasks.{position}.task",
            )


def _trace_batch(step: int, task: str, shard: Shard, indices: list[int]) -> None:
    """Test hook: MTPEFT_TRACE_BATCHES=PATH appends each micro-batch's example indices, one JSON line
    each, to PATH.<rank> (which examples each process trained on, to check that they divide the work)."""
    path = os.environ.get("MTPEFT_TRACE_BATCHES")
    if path:
        with open(f"{path}.{shard.rank}", "a", encoding="utf-8") as out:
            line = {"step": step, "task": task, "rank": shard.rank, "pid": os.getpid(), "indices": indices}
            out.write(json.dumps(line) + "\n")


def _compute_so_far(meter: CostMeter) -> dict[str, float]:
    """Cumulative training work at this point of the run: the compute-to-quality curve's x values."""
    return {
        "tokens": meter.tokens,
        "padded_tokens": meter.padded_tokens,
        "train_flops_estimate": meter.flops_estimate(),
        "wall_time_s": meter.elapsed(),
    }


def _scale_gradients(model: torch.nn.Module, scale: float) -> None:
    """Multiply the accumulated gradients by `scale` (a loss weighting's step-wide normaliser)."""
    if scale == 1.0:
        return
    for parameter in model.parameters():
        if parameter.grad is not None:
            parameter.grad.mul_(scale)


def _fusable(parameter: torch.nn.Parameter) -> bool:
    """Whether AdamW's fused kernel takes this parameter (floating point, on a CPU or a GPU)."""
    return parameter.device.type in ("cpu", "cuda") and parameter.dtype in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
    )


def _log_event(log: Any, step: int, event: str, message: str) -> None:
    """A line in train.log beside the per-step lines (JSON too; readers of steps look for "loss")."""
    if log is not None and not log.closed:
        log.write(json.dumps({"step": step, "event": event, "message": message}) + "\n")
        log.flush()


def _warn(log: Any, step: int, event: str, message: str) -> None:
    """Where a user running the command sees it (stderr) and where it is kept (train.log)."""
    _log_event(log, step, event, message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


class MultiTaskTrainer:
    def __init__(self, config: TrainConfig, run_dir: Path, *, progress: bool = True) -> None:
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        # find_unused_parameters: other tasks' heads are idle in a task's pass. broadcast_buffers off:
        # the buffers (position ids, the loss weightings' weights) are updated alike on every process
        # from global values, so DDP's broadcast before every forward would only cost time.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
        fsdp.claim_accelerate_switch()  # before the Accelerator reads it: mtpeft shards, not accelerate
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            kwargs_handlers=[ddp],
            cpu=cpu_only(),
            # The batch is the global one, split among the processes: one scheduler step per optimiser
            # step (without it accelerate steps the schedule once per process, as for P x the batch).
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            # Trackers (log_with) write under RUN_DIR/tracking/; accelerate starts them on the main
            # process only.
            log_with=config.log_with or None,
            project_config=(
                ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(tracking_dir(run_dir)))
                if config.log_with
                else None
            ),
        )
        _refuse_unsupported_sharding(self.accelerator)
        # Each process takes its share of every global batch (modeling/distributed.py).
        self.shard = Shard(self.accelerator.process_index, self.accelerator.num_processes)
        self.main = self.accelerator.is_main_process  # the only one that writes files
        set_seed(config.seed)
        self.tasks: dict[str, RunTask] = resolve_tasks(config)
        built = build_model(
            config,
            {name: t.spec for name, t in self.tasks.items()},
            loss_weighting=build_weighting(
                config.loss_weighting, list(self.tasks), config.loss_weighting_options
            ),
            token_loss=TOKEN_LOSSES[config.token_loss],
        )
        self.backbone, self.adapted, self.model = built.backbone, built.adapted, built.model
        self.pad_id = self.backbone.tokenizer.pad_token_id
        # FSDP: each process keeps 1/P of the weights (one process: nothing to shard, trained as usual).
        settings = fsdp.requested(config)
        self.fsdp = settings if settings is not None and self.shard.several else None
        if self.fsdp is not None:
            _refuse_unsupported_with_fsdp(config, self.fsdp, self.tasks)
            weighting = self.model.loss_weighting
            blocks = fsdp.shard_model(
                self.model,
                self.backbone.model,
                self.fsdp,
                keep_whole=list(weighting.parameters()) if weighting is not None else [],
            )
            if self.main:  # said once, so that a launch that did not shard is seen at once
                size = self.shard.size
                print(
                    f"FSDP ({self.fsdp.source}): each of {size} processes holds 1/{size} of the weights, "
                    f"gradients and optimiser state ({blocks} blocks sharded as units)",
                    file=sys.stderr,
                    flush=True,
                )
        every = config.grad_conflict_every
        self.conflict = ConflictLog(every) if every and len(self.tasks) > 1 else None
        measure = config.affinity is not None and len(self.tasks) > 1
        self.affinity = AffinityLog(config.affinity.every, list(self.tasks)) if measure else None
        if self.affinity is not None:
            check_supported(config, self.shard)  # run_training checked before writing; a study's worker
        # Called with each complete checkpoint (a study's Ray worker copies it to shared storage there).
        self.on_checkpoint: Callable[[Path], None] | None = None
        # Live curves (log_with); None without trackers, so such a run computes none of their values.
        self.tracking: Tracking | None = None

    # ---- setup -------------------------------------------------------------------------------
    def _load_features(self) -> None:
        tok = self.backbone.tokenizer
        seed = self.config.seed
        self.train_features: dict[str, TaskFeatures] = {
            n: t.features("train", tok, seed=seed, lm_head=self.backbone.info.lm_head)
            for n, t in self.tasks.items()
        }
        self.valid_features: dict[str, TaskFeatures] = {
            n: t.features("valid", tok, seed=seed, lm_head=self.backbone.info.lm_head)
            for n, t in self.tasks.items()
        }
        self.curve_test_features: dict[str, TaskFeatures] = (
            {
                n: t.features("test", tok, seed=seed, lm_head=self.backbone.info.lm_head)
                for n, t in self.tasks.items()
            }
            if self.config.curve_test
            else {}
        )
        self._check_lengths()
        self.batchers = {n: self._batcher(n, f) for n, f in self.train_features.items()}

    def _check_lengths(self) -> None:
        """The real rows against the model's position table (the preflight checked the length fields;
        a prompt's own words and a model whose config it could not read come only now): one message
        naming the field, not an index error at the first long batch."""
        limit = position_limit(self.backbone.model.config)
        if limit is None:
            return
        splits = (self.train_features, self.valid_features, self.curve_test_features)
        for position, entry in enumerate(self.config.tasks):
            longest = max(_longest_row(split[entry.label]) for split in splits if entry.label in split)
            if longest > limit:
                raise ConfigError(
                    f"task {entry.label!r} has rows of {longest} tokens (its code cut to max_length "
                    f"{entry.max_length}, with its prompt and answer), more than model {self.config.model!r} "
                    f"takes (its position table holds {limit}); lower max_length",
                    field=f"tasks.{position}.max_length",
                )

    def _batcher(self, task: str, features: TaskFeatures) -> TaskBatcher:
        entry = self.tasks[task].entry
        pad_to = None if self.config.dynamic_padding else self._pad_width(task)
        return TaskBatcher(
            features.lengths,
            entry.batch_size,
            seed=self.config.seed,
            length_grouping=self.config.length_grouping,
            batch_tokens=entry.batch_tokens,
            widths=padded_widths(features, pad_to=pad_to) if entry.batch_tokens else None,
            role_lengths=padded_widths(features),
            min_batch=self.shard.size,  # every process gets at least one example of every batch
        )

    def _shared_parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters every task shares: the module's, not the heads' or the weighting's."""
        head_ids = {id(p) for p in self.model.head_parameters()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]

    def _optimizer(self) -> torch.optim.Optimizer:
        groups = [
            {"params": self._shared_parameters(), "lr": self.config.lr},
            {"params": self.model.head_parameters(), "lr": self.config.head_lr or self.config.lr},
        ]
        if self.fsdp is not None:  # the fused kernel takes a group's tensors together: not mixed kinds
            groups = [part for group in groups for part in fsdp.split_sharded(group)]
        # The fused kernel updates every tensor in one pass: 3.8x (LoRA) to 5x (full fine-tuning, 16 vs
        # 79 ms a step on minilm) faster than the per-tensor loop PyTorch picks on a CPU by default.
        fused = all(_fusable(p) for group in groups for p in group["params"])
        return torch.optim.AdamW(groups, weight_decay=self.config.weight_decay, fused=fused or None)

    def trainable_parameters(self) -> int:
        return self.adapted.trainable_parameters() + self.model.head_parameter_count()

    # ---- training ----------------------------------------------------------------------------
    def train(self, *, resume: bool) -> TrainOutcome:
        cfg = self.config
        self._load_features()
        self._begin_measurements()
        optimizer = self._optimizer()
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps
        )
        if self.fsdp is None:
            model, optimizer, scheduler = self.accelerator.prepare(self.model, optimizer, scheduler)
        else:
            # Already sharded: accelerate must not wrap it (DDP on top), nor save the optimiser of one
            # shard as the whole; the scheduler goes into its checkpoints, the rest through modeling/fsdp.py.
            model = self.model
            self.accelerator.register_for_checkpointing(scheduler)
        self._training = (model, optimizer)
        # One writer: the other processes' lines would repeat the main one's.
        log = (self.run_dir / layout.TRAIN_LOG if self.main else Path(os.devnull)).open("a", encoding="utf-8")
        state = TrainState()
        checkpoint = self._intact_checkpoint(log) if resume else None
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
            state = TrainState.load(checkpoint)
            for name, cursor in state.cursors.items():
                self.batchers[name].restore(cursor)
            if self.conflict is not None:
                self.conflict.load_state_dict(state.grad_conflict)
            if self.affinity is not None:
                self.affinity.load_state_dict(state.affinity)
        meter = CostMeter(
            trainable_params=self.trainable_parameters(),
            backbone_params=self.adapted.total_parameters(),
            device=self.accelerator.device,
        )
        if state.cost:
            meter.load_state_dict(state.cost)
        sizes = {n: len(f) for n, f in self.train_features.items()}
        schedule = build_schedule(cfg.schedule, sizes, seed=cfg.seed, temperature=cfg.temperature)
        bar = tqdm(
            total=cfg.max_steps,
            initial=state.step,
            desc=f"train {cfg.name}",
            disable=not (self.progress and self.main),
            dynamic_ncols=True,
        )
        if cfg.log_with:
            self.tracking = Tracking(self.accelerator, cfg, self.run_dir)
            self.tracking.start(step=state.step)
        model.train()
        meter.start()
        try:
            while state.step < cfg.max_steps and not state.stopped_early:
                if self.tracking is not None:
                    self.tracking.begin_step(meter)
                losses = self._step(model, optimizer, scheduler, schedule(state.step), meter, state.step + 1)
                state.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                weights = self.model.loss_weighting.weights()  # as this step left them (some are learned)
                entry = {"step": state.step, "loss": losses, "lr": scheduler.get_last_lr()[0]}
                log.write(json.dumps(entry | {"loss_weights": weights}) + "\n")
                log.flush()  # a killed run keeps its log up to the last step
                if self.tracking is not None:
                    lrs = scheduler.get_last_lr()
                    self.tracking.end_step(state.step, meter, losses=losses, weights=weights, lrs=lrs)
                if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
                    self._validate(state, meter, log)
                if state.step % cfg.save_every == 0 and state.step < cfg.max_steps:
                    meter.stop()
                    self._checkpoint(state, meter)
                    meter.start()
                _fault_injection()
        except TrainingDiverged as err:
            _log_event(log, err.step if err.step is not None else state.step, "diverged", str(err))
            self._finish_tracking()
            raise
        except BaseException:  # closed on any failure too: an open handle keeps a full disk's mount busy
            bar.close()
            log.close()
            self._finish_tracking()
            raise
        meter.stop()
        bar.close()
        log.close()
        barrier()  # best/ is complete before any process reads its size
        if state.best_step is None and not state.history:  # never validated (resumed after the last step)
            self._validate(state, meter, None)
        self._finish_tracking()
        if state.best_step is None:
            raise TrainingDiverged(
                f"run {cfg.name}: no validation gave finite metrics, so there is no model to keep; "
                f"see {self.run_dir / layout.TRAIN_LOG} (lower lr, check the data)"
            )
        cost = meter.report(stored_bytes=self.stored_bytes(), full_model_bytes=self.full_model_bytes())
        # The shared module and the per-task heads, apart: sharing divides only the former by the task count.
        cost["shared_params"] = self.adapted.trainable_parameters()
        cost["head_params"] = self.model.head_parameter_count()
        last_valid = state.history[-1]["metrics"] if state.history else {}
        best_valid = next((h["metrics"] for h in state.history if h["step"] == state.best_step), last_valid)
        conflict = self._write_conflict()
        affinity = self._write_affinity()
        if affinity is not None:  # its share of the run's cost (already inside wall time and FLOPs)
            cost["affinity_wall_time_s"] = affinity["overhead"]["wall_time_s"]
            cost["affinity_flops_estimate"] = affinity["overhead"]["flops_estimate"]
        curve = [{k: v for k, v in h.items() if k != "loss_weights"} for h in state.history]
        return TrainOutcome(
            state.best_step,
            state.best_score,
            best_valid,
            cost,
            state.stopped_early,
            conflict,
            curve,
            affinity=affinity,
        )

    def _step(
        self, model, optimizer, scheduler, step_tasks: list[str], meter: CostMeter, step: int
    ) -> dict[str, float]:
        counts = {t: step_tasks.count(t) for t in set(step_tasks)}
        weighting = self.accelerator.unwrap_model(model).loss_weighting
        gradients = self._task_gradients(weighting, step)
        probe = self._affinity_probe(step)  # each task's gradient on what the lookahead steps
        factors: list[float] = []  # d term / d loss of each micro-batch (the lookahead steps on the loss)
        kept: list[tuple[str, Batch]] = []  # the step's batches, scored again after it (FAMO)
        probed: list[tuple[str, Batch]] = []  # the same, for the lookahead affinity
        losses: dict[str, float] = {}
        # All of the step's batches first (collating is cheap): a token loss normalises over the step.
        batches = [self._collate(task, step) for task in step_tasks]
        counted = self._global_counts(batches)
        batches = self._prepare_token_loss(step_tasks, batches)
        for position, (task, batch) in enumerate(zip(step_tasks, batches, strict=True)):
            tokens, positions, samples = counted[position]
            meter.add_batch(tokens=tokens, padded_tokens=positions, samples=samples, task=task)
            batch = to_device(batch, self.accelerator.device)
            last = position == len(step_tasks) - 1
            with self.accelerator.autocast():
                loss = global_loss(model(task, batch), batch.get(LOSS_SHARE, 1.0), self.shard.size)
                term = weighting.term(task, loss, len(counts)) / counts[task]
            value = loss.item()
            if not math.isfinite(value):  # before backward: nothing of this step reaches the weights
                raise self._diverged(
                    step,
                    f"the loss of task '{task}' is {value} (nothing of this step was applied)",
                    task=task,
                )
            if probe is not None:
                factors.append(loss_factor(term, loss))
            if self.fsdp is not None:
                # FSDP2's no_sync: reduce-scatter only after the step's last backward, or after every one
                # on a step that reads each task's gradient (then each is already the global one).
                model.set_requires_gradient_sync(last or gradients is not None)
                self.accelerator.backward(term)
            elif last:
                self.accelerator.backward(term)
            else:
                with self.accelerator.no_sync(model):
                    self.accelerator.backward(term)
            if gradients is not None:
                gradients.record(task)
            if probe is not None:
                probe.record(task)
                probed.append((task, batch))
            if weighting.needs_losses_after:
                kept.append((task, batch))
            losses[task] = losses.get(task, 0.0) + value / counts[task]
        if gradients is not None:
            gradients.synchronize()  # several processes: each task's gradient of the global batch
        if probe is not None:  # before anything of the step is applied; undone before it is
            self._measure_affinity(model, optimizer, probe, factors, probed, meter, step)
        _scale_gradients(model, weighting.gradient_scale(losses))
        if self.fsdp is not None:
            norm = fsdp.clip_grad_norm_(list(model.parameters()), self.config.max_grad_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
        # Stop, not skip: the checks sit before optimizer.step(), so the weights and AdamW's moments
        # never see the bad values; but skipping would hide a run that is blowing up (too high an lr, a
        # damaged checkpoint) behind an ordinary-looking result. fp16's loss scaler is the exception:
        # an inf gradient there is routine, and the scaler skips that step and lowers its scale itself.
        if norm is not None and self.accelerator.scaler is None and not math.isfinite(float(norm)):
            raise self._diverged(
                step, f"the gradient norm is {float(norm)} (nothing of this step was applied)"
            )
        try:
            optimizer.step()
        except RuntimeError as err:  # AdamW's step size lr / bias correction overflows float32 (lr ~1e38)
            if "overflow" not in str(err):
                raise
            raise self._diverged(step, f"the optimiser step overflowed ({err})") from err
        overflowed = self._non_finite_after_step()
        if overflowed is not None:  # the fused kernel does not raise: it writes inf/NaN into the weights
            raise self._diverged(
                step,
                f"parameter {overflowed} holds inf/NaN after the optimiser step (the run stops "
                "here and keeps no checkpoint of it)",
            )
        scheduler.step()
        after = self._losses_after(model, kept, counts, meter) if kept else None
        norms = gradients.norms() if gradients is not None else None
        weighting.after_step(StepLosses(before=losses, after=after, grad_norms=norms))
        if gradients is not None and self.conflict is not None and self.conflict.due(step):
            self.conflict.add(step, gradients)
        optimizer.zero_grad(set_to_none=True)
        meter.sample_memory()
        return losses

    # ---- what loss weightings and gradient-conflict logging measure --------------------------
    def _begin_measurements(self) -> None:
        weighting: LossWeighting = self.model.loss_weighting
        weighting.begin(epoch_steps=max(len(b) for b in self.batchers.values()))
        per_task_gradients = weighting.needs_gradient_norms or self.conflict is not None
        del per_task_gradients  # measured on several processes too (TaskGradients.synchronize)

    def _task_gradients(self, weighting: LossWeighting, step: int) -> TaskGradients | None:
        """A recorder of each task's gradient on the shared module, on steps that need one."""
        measure = self.conflict is not None and self.conflict.due(step)
        if weighting.needs_gradient_norms or measure:
            return TaskGradients(self._shared_parameters(), sharded=self.fsdp is not None)
        return None

    def _affinity_probe(self, step: int) -> TaskGradients | None:
        """On a step that measures affinity: a recorder of each task's gradient on the shared module
        and the heads (what the lookahead steps)."""
        if self.affinity is None or not self.affinity.due(step):
            return None
        shared = self._shared_parameters()
        heads = [p for p in self.model.heads.parameters() if p.requires_grad]
        return TaskGradients(shared + heads)

    def _measure_affinity(
        self,
        model,
        optimizer,
        recorded: TaskGradients,
        factors: list[float],
        batches: list[tuple[str, Batch]],
        meter: CostMeter,
        step: int,
    ) -> None:
        """One lookahead measurement (training/affinity.py), counted in the run's cost."""
        assert self.affinity is not None
        started = time.perf_counter()
        parameters = recorded.parameters
        rate_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        unwrapped = self.accelerator.unwrap_model(model)

        def loss(task: str, batch: Batch) -> float:
            with self.accelerator.autocast():
                return float(unwrapped(task, batch))

        gradients = task_gradients(recorded, factors, list(self.tasks))
        z = lookahead(unwrapped, parameters, [rate_of[id(p)] for p in parameters], gradients, batches, loss)
        # Every task's batches once before and once after each task's step.
        positions = sum(int(b["num_positions"]) for _, b in batches) * (1 + len(gradients))
        meter.add_forward_only(positions=positions)
        self.affinity.add(step, z, seconds=time.perf_counter() - started, positions=positions)

    def _write_affinity(self) -> dict[str, Any] | None:
        if self.affinity is None:
            return None
        backbone = self.adapted.total_parameters()
        if self.main:
            (self.run_dir / layout.AFFINITY_FILE).write_text(
                json.dumps(self.affinity.record(backbone_params=backbone), indent=1), encoding="utf-8"
            )
        return self.affinity.summary(backbone_params=backbone)

    @torch.no_grad()
    def _losses_after(
        self, model, kept: list[tuple[str, Batch]], counts: dict[str, int], meter: CostMeter
    ) -> dict[str, float]:
        """Each task's loss on the step's own batches, with the step applied (same mode as training)."""
        after: dict[str, float] = {}
        for task, batch in kept:
            meter.add_forward_only(positions=batch["num_positions"] * self.shard.size)  # about
            with self.accelerator.autocast():
                value = float(global_loss(model(task, batch), batch.get(LOSS_SHARE, 1.0), self.shard.size))
            after[task] = after.get(task, 0.0) + value / counts[task]
        return after

    def _write_conflict(self) -> dict[str, Any] | None:
        if self.conflict is None:
            return None
        record = self.conflict.record()
        if self.main:
            (self.run_dir / layout.GRAD_CONFLICT_FILE).write_text(
                json.dumps(record, indent=1), encoding="utf-8"
            )
        return self.conflict.summary()

    def _collate(self, task: str, step: int) -> Batch:
        """This process's share of the task's next global batch (all of it with one process)."""
        everyone = self.batchers[task].next()
        indices = self.shard.take(everyone)
        _trace_batch(step, task, self.shard, indices)
        pad_to = None if self.config.dynamic_padding else self._pad_width(task)
        batch = collate(self.train_features[task], indices, self.pad_id, pad_to=pad_to)
        if self.shard.several:
            batch[SHARD_SIZES] = self.shard.sizes(len(everyone))
            batch[SHARD_RANK] = self.shard.rank
            batch[LOSS_SHARE] = len(indices) / len(everyone)  # a mean over examples (see global_loss)
        return batch

    def _global_counts(self, batches: list[Batch]) -> list[tuple[int, int, int]]:
        """(tokens, padded positions, examples) of each of the step's global batches: what the cost
        counts. One all-reduce for the step, which also gives the token losses their global counts."""
        local = [
            [b["num_tokens"], b["num_positions"], len(b["indices"]), b.get("num_target_tokens", 0)]
            for b in batches
        ]
        if not self.shard.several:
            return [(t, p, n) for t, p, n, _ in local]
        summed = all_reduce_sum([value for row in local for value in row])
        rows = [[int(v) for v in summed[i : i + 4]] for i in range(0, len(summed), 4)]
        for batch, row in zip(batches, rows, strict=True):
            if "num_target_tokens" in batch:
                # The token losses divide by the step's target tokens: every process's, so that the
                # processes' losses add up to the global one (its LOSS_SHARE is then 1).
                batch["num_target_tokens"] = row[3]
        return [(t, p, n) for t, p, n, _ in rows]

    def _prepare_token_loss(self, tasks: list[str], batches: list[Batch]) -> list[Batch]:
        token_loss = self.model.token_loss
        batches = token_loss.prepare(tasks, batches)
        if self.shard.several and token_loss.global_norm:
            for batch in batches:
                if "num_target_tokens" in batch:
                    batch[LOSS_SHARE] = 1.0
        return batches

    def _pad_width(self, task: str) -> int:
        return self.tasks[task].entry.max_length

    def _diverged(self, step: int, what: str, *, task: str | None = None) -> TrainingDiverged:
        cfg = self.config
        rates = f"lr {cfg.lr:g}" + (f", head_lr {cfg.head_lr:g}" if cfg.head_lr else "")
        data = f"the data of task '{task}' ({self.tasks[task].entry.data})" if task else "the data"
        return TrainingDiverged(
            f"training of run {cfg.name} diverged at step {step}: {what}; {rates}. Stopped; the run is "
            f"not recorded as finished. Lower lr (and head_lr) or max_grad_norm, or check {data}; if the "
            "run was resumed, its checkpoint may be damaged: train again without --resume",
            step=step,
        )

    def _non_finite_after_step(self) -> str | None:
        """`_non_finite_parameter`, cheap enough for every step: one fused norm over the trainable
        tensors (8 ms for all of minilm's 22.7M weights), the exact search only when a norm is not finite
        (huge but finite weights can overflow a norm)."""
        trainable = [p.detach() for p in self.model.parameters() if p.requires_grad]
        if self.fsdp is not None:
            return None if fsdp.all_finite(trainable) else self._non_finite_parameter()
        norms = torch._foreach_norm(trainable)  # no public fused norm; clip_grad_norm_ uses the same
        if bool(torch.stack(norms).isfinite().all()):
            return None
        return self._non_finite_parameter()

    def _non_finite_parameter(self) -> str | None:
        """The first trainable parameter holding inf/NaN (checked before a model is kept or saved). FSDP:
        each process looks at its shards and every process gets the first name any of them found."""
        model = self.accelerator.unwrap_model(self.model)
        found = None
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and not bool(torch.isfinite(fsdp.local(parameter.detach())).all()):
                found = name
                break
        if self.fsdp is not None:
            return next((name for name in gather_objects(found) if name is not None), None)
        return found

    # ---- validation, selection, checkpoints --------------------------------------------------
    def _validate(self, state: TrainState, meter: CostMeter, log: Any) -> None:
        bad = self._non_finite_parameter()
        if bad is not None:  # classification metrics look ordinary even on NaN logits: check the weights
            raise self._diverged(state.step, f"parameter {bad} holds inf/NaN")
        model = self.accelerator.unwrap_model(self.model)
        compute = _compute_so_far(meter)  # before validating: the curve's x is training work only
        metrics = self._scores(model, self.valid_features)
        score = sum(metrics[n][self.tasks[n].spec.primary] for n in metrics) / len(metrics)
        entry = {
            "step": state.step,
            "score": score,
            "metrics": metrics,
            "loss_weights": model.loss_weighting.weights(),
            "compute": compute,
        }
        if self.curve_test_features:  # the budget curve's test points; selection reads valid only
            entry["test"] = self._scores(model, self.curve_test_features)
        state.history.append(entry)
        if self.tracking is not None:
            self.tracking.validation(state.step, score=score, metrics=metrics, test=entry.get("test"))
        if not math.isfinite(score):  # never selected: a NaN compares false, an inf would win forever
            message = f"validation at step {state.step} gave non-finite metrics {metrics}; not selected"
            _warn(log, state.step, "non-finite-validation", message)
        if math.isfinite(score) and (state.best_score is None or score > state.best_score):
            state.best_score, state.best_step = score, state.step
            state.evals_without_improvement = 0
            self.save_deployable(self.run_dir / BEST_DIR, step=state.step, score=score)
        else:
            state.evals_without_improvement += 1
            if self.config.patience and state.evals_without_improvement >= self.config.patience:
                state.stopped_early = True

    def _finish_tracking(self) -> None:
        if self.tracking is not None:
            self.tracking.finish()
            self.tracking = None

    def _scores(self, model: Any, split: dict[str, TaskFeatures]) -> dict[str, dict[str, float]]:
        return {
            name: evaluate_task(
                model,
                name,
                features,
                pad_id=self.pad_id,
                batch_size=self.tasks[name].entry.eval_batch_size,
                device=self.accelerator.device,
                progress=self.progress
                and self.main,  # generating for a generation task's split takes a while
                shard=self.shard,  # each process predicts its share of the batches
                lockstep=self.fsdp is not None,  # FSDP gathers weights in every forward, with everyone
            ).metrics
            for name, features in split.items()
        }

    def _checkpoint(self, state: TrainState, meter: CostMeter) -> None:
        """Every process saves its random state into the checkpoint (accelerate's save_state), the main
        one the weights, the optimiser and the data position (the same on every process), then the
        manifest, and renames it into place."""
        bad = self._non_finite_parameter()
        if bad is not None:  # a checkpoint of inf/NaN weights would only resume the divergence
            raise self._diverged(state.step, f"parameter {bad} holds inf/NaN")
        state.cursors = {n: b.cursor.__dict__.copy() for n, b in self.batchers.items()}
        state.cost = meter.state_dict()
        state.grad_conflict = self.conflict.state_dict() if self.conflict is not None else {}
        state.affinity = self.affinity.state_dict() if self.affinity is not None else {}
        final = self.run_dir / layout.CHECKPOINTS_DIR / f"step-{state.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()
        try:
            self.accelerator.save_state(str(tmp))
            if self.fsdp is not None:  # accelerate saved the random states; the weights are gathered here
                fsdp.save_training_state(*self._training, tmp, main=self.main)
            barrier()  # every process's files are in before the manifest lists them
            if not self.main:
                return
            state.save(tmp)
            write_manifest(tmp)  # last: a checkpoint exists under its final name only once complete
        except BaseException as err:  # Ctrl-C too: a half-written checkpoint is never left behind
            shutil.rmtree(tmp, ignore_errors=True)  # first: it frees the space the store write needs
            if isinstance(err, Exception) and is_disk_full(err):
                raise disk_full(
                    f"checkpoint {final.name} of run {self.config.name}",
                    final.parent,
                    needed=self.checkpoint_bytes(),
                    then="continue the run from its last checkpoint: mtpeft train CONFIG --resume",
                ) from err
            raise
        shutil.rmtree(final, ignore_errors=True)  # a damaged one we fell back from, now redone
        tmp.rename(final)
        self._prune_checkpoints(final)
        if self.on_checkpoint is not None:
            self.on_checkpoint(final)

    def checkpoint_bytes(self) -> int:
        """A checkpoint's size: the newest one on disk, else the model's tensors plus AdamW's two
        moments of each trainable one (what accelerate's save_state writes, less a few small files)."""
        existing = checkpoint_dirs(self.run_dir)
        if existing:
            return folder_bytes(existing[0])
        model = self.accelerator.unwrap_model(self.model)
        tensors = [*model.parameters(), *model.buffers()]
        weights = sum(t.numel() * t.element_size() for t in tensors)
        moments = sum(2 * p.numel() * 4 for p in model.parameters() if p.requires_grad)
        return weights + moments

    def _prune_checkpoints(self, final: Path) -> None:
        """Keep `final` and the newest older checkpoint; drop the rest (older ones, leftover `.tmp`
        ones, and newer ones left by an attempt this run fell back from)."""
        step = int(final.name.removeprefix("step-"))
        older = [c for c in checkpoint_dirs(self.run_dir) if int(c.name.removeprefix("step-")) < step]
        keep = {final, *older[: KEPT_CHECKPOINTS - 1]}
        for path in (self.run_dir / layout.CHECKPOINTS_DIR).glob("step-*"):
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def _intact_checkpoint(self, log: Any) -> Path | None:
        """The newest checkpoint whose files match its manifest. Each damaged one is reported (train.log
        and stderr) and skipped. With none intact, training starts again from step 0: the runs are
        seeded, so that gives the result an undamaged resume would have, at the cost of time, which is
        also what a resume does when the process died before its first checkpoint; stopping instead
        would leave a study (which resumes unattended) with nothing but a failed run."""
        damaged: list[tuple[Path, str]] = []
        intact = None
        for checkpoint in checkpoint_dirs(self.run_dir):
            problem = manifest_problem(checkpoint)
            if problem is None:
                intact = checkpoint
                break
            damaged.append((checkpoint, problem))
        then = (
            f"resuming from {intact.name}"
            if intact is not None
            else "no intact checkpoint is left: training this run again from step 0"
        )
        for checkpoint, problem in damaged if self.main else []:
            message = f"checkpoint {checkpoint.name} of run {self.config.name} is damaged ({problem}); {then}"
            _warn(log, int(checkpoint.name.removeprefix("step-")), "checkpoint-damaged", message)
        return intact

    def _load_checkpoint(self, checkpoint: Path) -> None:
        """Load a verified checkpoint. Its bytes are as written, so a failure here is a mismatch
        (another mtpeft/accelerate version, a changed config), not damage: stop with one message."""
        try:
            self.accelerator.load_state(str(checkpoint))
            if self.fsdp is not None:
                fsdp.load_training_state(*self._training, checkpoint)
        except (RuntimeError, ValueError, KeyError, OSError, EOFError) as err:
            raise MtpeftError(
                f"checkpoint {checkpoint} is intact but does not load into this run "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "train again without --resume"
            ) from err

    def save_deployable(self, directory: Path, *, step: int, score: float) -> None:
        """What a deployment needs: the shared module and the heads (no optimiser state). FSDP: every
        process takes part in gathering the whole weights, the main one writes them."""
        whole = fsdp.full_model_state(self.model) if self.fsdp is not None else None
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        save_deployable(model, directory, step=step, score=score, state_dict=whole)

    def stored_bytes(self) -> int:
        """What a deployment stores: the module and the heads (the manifest is bookkeeping)."""
        best = self.run_dir / BEST_DIR
        if not best.exists():
            return 0
        return sum(f.stat().st_size for f in best.rglob("*") if f.is_file() and f.name != MANIFEST_FILE)

    def full_model_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.backbone.model.parameters())
