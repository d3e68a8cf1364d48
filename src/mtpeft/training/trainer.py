"""The training recipe: setup, train (checkpointed, resumable), select the best, evaluate, record.

Built on `accelerate` (device placement, DDP/FSDP through `accelerate launch`, mixed precision,
checkpoint state); the multi-task loop itself is ours because no library schedules one task per
micro-batch with per-task heads and loss weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.evaluation.evaluate import evaluate_task
from mtpeft.layout import BEST_DIR, STATE_FILE, latest_checkpoint
from mtpeft.modeling.build import build_model, save_deployable
from mtpeft.modeling.inputs import TaskFeatures, collate, to_device
from mtpeft.modeling.task_data import RunTask, resolve_tasks
from mtpeft.training.batching import TaskBatcher
from mtpeft.training.cost import CostMeter
from mtpeft.training.loss_weighting import LOSS_WEIGHTINGS
from mtpeft.training.sampling import build_schedule


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


_STEPS_IN_PROCESS = 0  # optimiser steps taken by this process, over every run it trains


def _fault_injection() -> None:
    """Test hooks, counted in optimiser steps of this process (a study trains several runs in one):
    MTPEFT_KILL_AT_STEP=N SIGKILLs the process after step N, like an OOM kill;
    MTPEFT_INTERRUPT_AT_STEP=N sends it SIGINT, like Ctrl-C."""
    global _STEPS_IN_PROCESS
    _STEPS_IN_PROCESS += 1
    faults = {"MTPEFT_KILL_AT_STEP": signal.SIGKILL, "MTPEFT_INTERRUPT_AT_STEP": signal.SIGINT}
    for variable, sig in faults.items():
        target = os.environ.get(variable)
        if target and int(target) == _STEPS_IN_PROCESS:
            os.kill(os.getpid(), sig)


class MultiTaskTrainer:
    def __init__(self, config: TrainConfig, run_dir: Path, *, progress: bool = True) -> None:
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # other tasks' heads idle
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, kwargs_handlers=[ddp])
        set_seed(config.seed)
        self.tasks: dict[str, RunTask] = resolve_tasks(config)
        built = build_model(
            config,
            {name: t.spec for name, t in self.tasks.items()},
            loss_weighting=LOSS_WEIGHTINGS[config.loss_weighting](list(self.tasks)),
        )
        self.backbone, self.adapted, self.model = built.backbone, built.adapted, built.model
        self.pad_id = self.backbone.tokenizer.pad_token_id

    # ---- setup -------------------------------------------------------------------------------
    def _load_features(self) -> None:
        tok = self.backbone.tokenizer
        seed = self.config.seed
        self.train_features: dict[str, TaskFeatures] = {
            n: t.features("train", tok, seed=seed) for n, t in self.tasks.items()
        }
        self.valid_features: dict[str, TaskFeatures] = {
            n: t.features("valid", tok, seed=seed) for n, t in self.tasks.items()
        }
        self.batchers = {
            n: TaskBatcher(
                f.lengths,
                self.tasks[n].entry.batch_size,
                seed=seed,
                length_grouping=self.config.length_grouping,
            )
            for n, f in self.train_features.items()
        }

    def _optimizer(self) -> torch.optim.Optimizer:
        head_ids = {id(p) for p in self.model.head_parameters()}
        shared = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [
            {"params": shared, "lr": self.config.lr},
            {"params": self.model.head_parameters(), "lr": self.config.head_lr or self.config.lr},
        ]
        return torch.optim.AdamW(groups, weight_decay=self.config.weight_decay)

    def trainable_parameters(self) -> int:
        return self.adapted.trainable_parameters() + self.model.head_parameter_count()

    # ---- training ----------------------------------------------------------------------------
    def train(self, *, resume: bool) -> TrainOutcome:
        cfg = self.config
        self._load_features()
        optimizer = self._optimizer()
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps
        )
        model, optimizer, scheduler = self.accelerator.prepare(self.model, optimizer, scheduler)
        state = TrainState()
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint))
            state = TrainState.load(checkpoint)
            for name, cursor in state.cursors.items():
                self.batchers[name].restore(cursor)
        meter = CostMeter(
            trainable_params=self.trainable_parameters(),
            backbone_params=self.adapted.total_parameters(),
            device=self.accelerator.device,
        )
        if state.cost:
            meter.load_state_dict(state.cost)
        sizes = {n: len(f) for n, f in self.train_features.items()}
        schedule = build_schedule(cfg.schedule, sizes, seed=cfg.seed, temperature=cfg.temperature)
        log = (self.run_dir / layout.TRAIN_LOG).open("a", encoding="utf-8")
        bar = tqdm(
            total=cfg.max_steps,
            initial=state.step,
            desc=f"train {cfg.name}",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        model.train()
        meter.start()
        while state.step < cfg.max_steps and not state.stopped_early:
            losses = self._step(model, optimizer, scheduler, schedule(state.step), meter)
            state.step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            log.write(
                json.dumps({"step": state.step, "loss": losses, "lr": scheduler.get_last_lr()[0]}) + "\n"
            )
            log.flush()  # a killed run keeps its log up to the last step
            if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
                self._validate(state, meter)
            if state.step % cfg.save_every == 0 and state.step < cfg.max_steps:
                meter.stop()
                self._checkpoint(state, meter)
                meter.start()
            _fault_injection()
        meter.stop()
        bar.close()
        log.close()
        if state.best_step is None:  # never validated (e.g. resumed after the last step)
            self._validate(state, meter)
        cost = meter.report(stored_bytes=self.stored_bytes(), full_model_bytes=self.full_model_bytes())
        # The shared module and the per-task heads, apart: sharing divides only the former by the task count.
        cost["shared_params"] = self.adapted.trainable_parameters()
        cost["head_params"] = self.model.head_parameter_count()
        last_valid = state.history[-1]["metrics"] if state.history else {}
        best_valid = next((h["metrics"] for h in state.history if h["step"] == state.best_step), last_valid)
        return TrainOutcome(state.best_step, state.best_score, best_valid, cost, state.stopped_early)

    def _step(self, model, optimizer, scheduler, step_tasks: list[str], meter: CostMeter) -> dict[str, float]:
        counts = {t: step_tasks.count(t) for t in set(step_tasks)}
        weighting = self.accelerator.unwrap_model(model).loss_weighting
        losses: dict[str, float] = {}
        for position, task in enumerate(step_tasks):
            indices = self.batchers[task].next()
            batch = collate(
                self.train_features[task],
                indices,
                self.pad_id,
                pad_to=None if self.config.dynamic_padding else self._pad_width(task),
            )
            meter.add_batch(
                tokens=batch["num_tokens"],
                padded_tokens=batch["num_positions"],
                samples=len(indices),
                task=task,
            )
            batch = to_device(batch, self.accelerator.device)
            last = position == len(step_tasks) - 1
            with self.accelerator.autocast():
                loss = model(task, batch)
                term = weighting.term(task, loss, len(counts)) / counts[task]
            if last:
                self.accelerator.backward(term)
            else:
                with self.accelerator.no_sync(model):
                    self.accelerator.backward(term)
            losses[task] = losses.get(task, 0.0) + loss.item() / counts[task]
        self.accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        meter.sample_memory()
        return losses

    def _pad_width(self, task: str) -> int:
        return self.tasks[task].entry.max_length

    # ---- validation, selection, checkpoints --------------------------------------------------
    def _validate(self, state: TrainState, meter: CostMeter) -> None:
        model = self.accelerator.unwrap_model(self.model)
        metrics: dict[str, dict[str, float]] = {}
        for name, features in self.valid_features.items():
            result = evaluate_task(
                model,
                name,
                features,
                pad_id=self.pad_id,
                batch_size=self.tasks[name].entry.eval_batch_size,
                device=self.accelerator.device,
            )
            metrics[name] = result.metrics
        score = sum(metrics[n][self.tasks[n].spec.primary] for n in metrics) / len(metrics)
        state.history.append(
            {
                "step": state.step,
                "score": score,
                "metrics": metrics,
                "loss_weights": model.loss_weighting.weights(),
            }
        )
        if state.best_score is None or score > state.best_score:
            state.best_score, state.best_step = score, state.step
            state.evals_without_improvement = 0
            self.save_deployable(self.run_dir / BEST_DIR, step=state.step, score=score)
        else:
            state.evals_without_improvement += 1
            if self.config.patience and state.evals_without_improvement >= self.config.patience:
                state.stopped_early = True

    def _checkpoint(self, state: TrainState, meter: CostMeter) -> None:
        if not self.accelerator.is_main_process:
            return
        state.cursors = {n: b.cursor.__dict__.copy() for n, b in self.batchers.items()}
        state.cost = meter.state_dict()
        final = self.run_dir / layout.CHECKPOINTS_DIR / f"step-{state.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.save_state(str(tmp))
        state.save(tmp)
        tmp.rename(final)  # a checkpoint exists only once it is complete
        for old in (self.run_dir / layout.CHECKPOINTS_DIR).glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def save_deployable(self, directory: Path, *, step: int, score: float) -> None:
        """What a deployment needs: the shared module and the heads (no optimiser state)."""
        if not self.accelerator.is_main_process:
            return
        save_deployable(self.accelerator.unwrap_model(self.model), directory, step=step, score=score)

    def stored_bytes(self) -> int:
        best = self.run_dir / BEST_DIR
        return sum(f.stat().st_size for f in best.rglob("*") if f.is_file()) if best.exists() else 0

    def full_model_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.backbone.model.parameters())
