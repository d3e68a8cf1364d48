"""The multi-task model: ONE adapted backbone shared by all tasks, one small head per task.

One path for training, evaluation and inference: `encode_inputs` runs the backbone once per distinct
input of a batch (pooled vectors by role), then a head turns those vectors into a loss or predictions.
`analyze`, `embed` and `compare` are the inference entries built on the same two steps, so N tasks on
one snippet cost one backbone pass.

A task trained through the LM head (formulation instruct: generation, or a label word) has no head; the
same backbone runs with its own LM head instead (modeling/lm.py), in `task_loss` and `predict` alike, and
`generate` is its inference entry.

Except with a task-conditioned method (MTL-LoRA: each task has its own transform inside the backbone):
there the backbone differs per task, so each task runs inside `task_context(task)` and `analyze` encodes
a snippet once per task (`task_conditioned`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mtpeft.heads import TaskHead, build_head
from mtpeft.heads.classification import ClassificationHead
from mtpeft.heads.pooling import POOLINGS
from mtpeft.heads.retrieval import RetrievalHead
from mtpeft.modeling import lm
from mtpeft.modeling.inputs import Batch, to_device, tokenize_task
from mtpeft.modeling.lm_inputs import LmSequences, collate_lm, prompt_batch
from mtpeft.peft_methods.task_context import is_task_conditioned, task_context
from mtpeft.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from mtpeft.config import TaskEntry


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        tasks: dict[str, TaskSpec],
        *,
        hidden_size: int,
        pooling: str,
        loss_weighting: nn.Module | None = None,
        head_options: dict[str, Any] | None = None,
        lm_tasks: dict[str, TaskEntry] | None = None,
        tokenizer: Any = None,
        token_loss: Any = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.tasks = tasks
        # Tasks trained through the LM head, with their config entries (prompt and generation limits).
        self.lm_tasks: dict[str, TaskEntry] = dict(lm_tasks or {})
        self.heads = nn.ModuleDict(
            {
                name: build_head(spec, hidden_size, head_options)
                for name, spec in tasks.items()
                if name not in self.lm_tasks
            }
        )
        self.tokenizer = tokenizer  # LM tasks: prompts of raw texts in, generated tokens out
        self.token_loss = token_loss  # training only (training/token_loss.py); None: each batch's token mean
        # Training only (training/loss_weighting.py): a module here so its learned weights are
        # optimised, checkpointed and wrapped by DDP together with the heads.
        self.loss_weighting = loss_weighting
        # The run's calibration (calibration_file.Calibration) once loaded with one; None: uncalibrated.
        self.calibration: Any = None

    # ---- the one path: encode each input once, then heads -----------------------------------
    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str | None = None
    ) -> torch.Tensor:
        """Pooled vectors [batch, hidden]: one backbone pass (for `task`, where the module is per task)."""
        with task_context(task) if task is not None else nullcontext():
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return POOLINGS[self.pooling](hidden, attention_mask)

    def encode_inputs(self, batch: Batch, roles: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """{role: pooled vectors} for `roles` (default: every input of the batch), one pass each, in order."""
        inputs = batch["inputs"]
        return {role: self.encode(**inputs[role]) for role in (roles or inputs)}

    @property
    def task_conditioned(self) -> bool:
        """The backbone runs differently per task (MTL-LoRA), so one encode cannot serve several tasks."""
        return is_task_conditioned(self.backbone)

    def task_loss(self, task: str, batch: Batch) -> torch.Tensor:
        if task in self.lm_tasks:
            with task_context(task):
                return lm.loss(self.backbone, batch, self.token_loss)
        head = self.heads[task]
        with task_context(task):  # the whole head: whatever backbone call it makes is for this task
            return head.loss(self.encode_inputs(batch, head.inputs), batch)

    def forward(self, task: str, batch: Batch) -> torch.Tensor:
        return self.task_loss(task, batch)

    @torch.no_grad()
    def predict(self, task: str, batch: Batch) -> dict[str, Any]:
        """Head outputs (tensors); an LM task's `y_pred` among its answer words, or `hypotheses` (texts)."""
        if task in self.lm_tasks:
            with task_context(task):
                if "num_choices" in batch:
                    return lm.choose(self.backbone, batch)
                return {"hypotheses": self._generate_batch(task, batch)}
        head = self.heads[task]
        with task_context(task):
            return head.predict(self.encode_inputs(batch, head.inputs))

    # ---- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        task: str,
        texts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        batch_size: int | None = None,
    ) -> list[str]:
        """What a task trained through the LM head writes for each code text: the summary, the repaired
        code, or a label word (greedy unless `num_beams` > 1; at most `max_new_tokens`, by default the
        task's own limits). Prompts are built as in training, `batch_size` (the task's eval_batch_size)
        at a time."""
        entry = self._lm_entry(task, "generate with")
        seqs = self._lm_sequences(task, entry, texts)
        texts_out: list[str] = []
        for batch in self._lm_batches(seqs, entry, batch_size, prompts_only=True):
            texts_out += self._generate_batch(task, batch, max_new_tokens, num_beams)
        return texts_out

    @torch.no_grad()
    def choose(
        self,
        task: str,
        texts: Sequence[str],
        others: Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """An instruct classification task's probabilities over its labels [n, labels]: the likelihood of
        each label word after the training prompt (as evaluation scores it), softmaxed. `others`: the
        second snippet of a pair task; `max_length`: code tokens per snippet (default: the task's)."""
        entry = self._lm_entry(task, "choose a label with")
        if max_length is not None:
            entry = entry.model_copy(update={"max_length": max_length})
        seqs = self._lm_sequences(task, entry, texts, others)
        if seqs.choices is None:
            raise ValueError(f"task '{task}' generates free text; it has no labels to choose from")
        out = []
        for batch in self._lm_batches(seqs, entry, batch_size, prompts_only=False):
            with task_context(task):
                out.append(lm.choose(self.backbone, batch)["probs"])
        return torch.cat(out)

    def prompt_lengths(self, task: str, texts: Sequence[str]) -> list[int]:
        """Tokens of the prompt each text becomes for an LM-head task (instruction and the code as cut)."""
        return [len(p) for p in self._lm_sequences(task, self._lm_entry(task, "prompt"), texts).prompts]

    def _lm_entry(self, task: str, what: str) -> TaskEntry:
        if task not in self.lm_tasks:
            raise ValueError(
                f"task '{task}' has no language-model formulation to {what}; "
                f"tasks it can use: {', '.join(self.lm_tasks) or 'none'}"
            )
        return self.lm_tasks[task]

    def _lm_sequences(
        self, task: str, entry: TaskEntry, texts: Sequence[str], others: Sequence[str] | None = None
    ) -> LmSequences:
        from mtpeft.data.example import Example

        seconds = list(others) if others is not None else [None] * len(texts)
        examples = [
            Example(id=str(i), code=text, label=0, target="", code_b=other)
            for i, (text, other) in enumerate(zip(texts, seconds, strict=True))
        ]
        seqs = tokenize_task(
            self.tasks[task], entry, examples, self.tokenizer, lm_head=self.backbone.info.lm_head
        ).lm
        assert seqs is not None
        return seqs

    def _lm_batches(
        self, seqs: LmSequences, entry: TaskEntry, batch_size: int | None, *, prompts_only: bool
    ) -> Iterable[Batch]:
        device = next(self.parameters()).device
        size = batch_size or entry.eval_batch_size
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(seqs.prompts), size):
            indices = list(range(start, min(start + size, len(seqs.prompts))))
            batch = (
                prompt_batch(seqs, indices, pad_id)
                if prompts_only
                else collate_lm(seqs, indices, pad_id, predict=True)
            )
            yield to_device(batch, device)

    def _generate_batch(
        self, task: str, batch: Batch, max_new_tokens: int | None = None, num_beams: int | None = None
    ) -> list[str]:
        with task_context(task):
            return lm.generate_texts(
                self.backbone,
                self.tokenizer,
                batch,
                self.lm_tasks[task],
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
            )

    def snippet_tasks(self) -> list[str]:
        """Tasks whose head reads one snippet and gives class probabilities (binary, multiclass)."""
        return [n for n, h in self.heads.items() if isinstance(h, ClassificationHead) and len(h.inputs) == 1]

    @torch.no_grad()
    def analyze(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """{task: class probabilities [batch, labels]} of every snippet task (or `tasks`), from ONE encode
        (one per task where the module is task-conditioned)."""
        snippet_tasks = self.snippet_tasks()
        names = list(snippet_tasks if tasks is None else tasks)
        others = [n for n in names if n not in snippet_tasks]
        if others:
            raise ValueError(
                f"analyze() runs one-snippet classification tasks ({', '.join(snippet_tasks) or 'none'}); "
                f"not {', '.join(others)} (use embed() for retrieval, compare() for pairs)"
            )
        if self.task_conditioned:
            return {n: self._probs(n, self.encode(input_ids, attention_mask, task=n)) for n in names}
        pooled = self.encode(input_ids, attention_mask)
        return {n: self._probs(n, pooled) for n in names}

    def _probs(self, task: str, pooled: torch.Tensor) -> torch.Tensor:
        head = self.heads[task]
        return head.predict({head.inputs[0]: pooled})["probs"]

    @torch.no_grad()
    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str | None = None
    ) -> torch.Tensor:
        """Unit-length retrieval embeddings [batch, dim] of code or queries (one backbone, one projection)."""
        name = self._task_of_type(RetrievalHead, task, "embed")
        return self.heads[name].project(self.encode(input_ids, attention_mask, task=name))

    @torch.no_grad()
    def compare(self, u: torch.Tensor, v: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """Pair-head probabilities [n, labels] for pooled vectors from `encode` (u, v: [n or 1, hidden]);
        with a task-conditioned module, encode them with `encode(..., task=task)`."""
        head = self._head_of_type(ClassificationHead, task, "compare", inputs=2)
        u, v = torch.broadcast_tensors(u, v)  # one snippet against many candidates
        return head.predict(dict(zip(head.inputs, (u, v), strict=True)))["probs"]

    def _head_of_type(
        self, cls: type[TaskHead], task: str | None, what: str, inputs: int | None = None
    ) -> TaskHead:
        """The named head, or the only one, of `cls` reading `inputs` inputs; else a message listing them."""
        return self.heads[self._task_of_type(cls, task, what, inputs)]

    def _task_of_type(
        self, cls: type[TaskHead], task: str | None, what: str, inputs: int | None = None
    ) -> str:
        """The task of that head (see `_head_of_type`)."""
        fits = [n for n, h in self.heads.items() if isinstance(h, cls) and inputs in (None, len(h.inputs))]
        if task is None and len(fits) == 1:
            return fits[0]
        if task in fits:
            return task
        if task is not None:
            problem = f"task '{task}' has no head for {what}()"
        else:
            problem = f"{what}() needs a task name" if fits else f"this model has no head for {what}()"
        raise ValueError(f"{problem}; tasks it can use: {', '.join(fits) or 'none'}")

    # ---- parameters ----------------------------------------------------------------------------
    def head_parameters(self) -> list[nn.Parameter]:
        weighting = list(self.loss_weighting.parameters()) if self.loss_weighting is not None else []
        return list(self.heads.parameters()) + weighting

    def head_parameter_count(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())
