"""Use a trained run from Python: every task of the run from one loaded model.

    import mtpeft
    run = mtpeft.load("workspace/runs/shared-five-1a2b3c4d5e")
    run.tasks                      # {name: TaskInfo(kind, labels, description, max_length, ...)}
    run.analyze(["int f(char *s) {...}", "def g(): ..."])
    # [{"vuln-chrome": {"label": "1", "probability": 0.91, "probabilities": {"0": 0.09, "1": 0.91}},
    #   "complexity": {...}}, ...]                     one backbone pass per snippet for all those tasks
    run.compare(code_a, [candidate, ...], task="clone")  # pair tasks: each distinct side encoded once
    run.embed(snippets)            # unit vectors of the retrieval head (numpy, [n, dim])
    run.search("parse a config file", k=10, index="my-index/")   # an index from `mtpeft index`
    runs = mtpeft.load_many([run_a, run_b])   # runs on the same base model share one backbone
    run.memory                     # {"shared_backbone_with": ..., "parameter_bytes_added": ..., ...}

Inputs are batched and grouped by length (sorted, padded per batch, answered in the caller's order),
run under `torch.inference_mode()`, on the GPU when there is one, and truncated per task to the
`max_length` the run was trained with (`max_tokens=` overrides it for every task). A snippet that fits
every requested task's limit is encoded once; one longer than some limit is encoded once per distinct
truncation, which is what each task saw in training and evaluation.

`Run` is also the scanner's model (it implements `mtpeft.scan.Analyzer`), so `mtpeft scan`, `mtpeft
predict`, `mtpeft index` and this API share one inference path.

A folder written by `mtpeft export` loads the same way, without PyTorch: `load` sees its export.json and
returns an `mtpeft.export.runtime.ExportedRun` (ONNX Runtime and `tokenizers` only), with the same
`analyze` / `compare` / `embed` / `search`. Both share `BaseRun`: the tasks, choosing them by name, their
token limits, and search. This module imports torch only when a run directory is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, overload

import numpy as np

from mtpeft.calibration_file import NO_OOD, UNCALIBRATED
from mtpeft.config import TaskEntry
from mtpeft.data.example import blank_text_problem
from mtpeft.errors import ConfigError, InputError
from mtpeft.export.folder import is_export
from mtpeft.extras import require_train
from mtpeft.index.store import read_run_id, run_fingerprint
from mtpeft.scan.analyzer import TaskSpec as ScanTaskSpec

if TYPE_CHECKING:
    import torch

    from mtpeft.calibration_file import Calibration
    from mtpeft.config import TrainConfig
    from mtpeft.evaluation.ood import OodStats
    from mtpeft.export.runtime import ExportedRun
    from mtpeft.index import Hit, SearchIndex
    from mtpeft.modeling.build import TrainedRun
    from mtpeft.modeling.model import MultiTaskModel
    from mtpeft.modeling.shared_base import MemoryUse

DEFAULT_BATCH_SIZE = 32
_TOKEN_COUNT_CHUNK = 1024  # texts per tokenizer call when only counting


class _Answer(TypedDict):
    label: str  # the most probable label, as the task's files write it
    probability: float  # of that label
    probabilities: dict[str, float]  # every label's


class Prediction(_Answer, total=False):
    """One task's answer for one input: label, probability, probabilities, and for a snippet where the run
    has OOD statistics, its out-of-distribution score (higher: less like the training code) and whether it
    is beyond the run's threshold (the same in every task's answer for a snippet). Those two are absent
    where the run has none (`info["ood"]` says so; `mtpeft calibrate RUN` fits them)."""

    ood_score: float
    unfamiliar: bool


@dataclass(frozen=True)
class TaskInfo(ScanTaskSpec):
    """A task of the run: what the scanner needs (name, kind, labels, base, description) and its limits."""

    max_length: int = TaskEntry.model_fields["max_length"].default  # tokens of each code snippet
    max_query_length: int = TaskEntry.model_fields["max_query_length"].default  # retrieval queries
    metrics: tuple[str, ...] = ()  # what the task is scored by (its declaration's `metrics`)


def load(
    run_dir: str | Path, *, device: str | torch.device | None = None, batch_size: int = 32
) -> Run | ExportedRun:
    """Load a trained run directory, or a folder `mtpeft export` wrote, for inference.

    The base model, the run's PEFT module (its best checkpoint, `best/`, checked against its manifest)
    and every task head are loaded once; every task of the run is then answered from that one model.
    An export folder (it holds export.json) loads its ONNX graph instead, checked against its manifest,
    without PyTorch (`pip install 'mtpeft[onnx]'`): an `ExportedRun` with the same answering methods.

    Args:
        run_dir: A run directory, `WORKSPACE/runs/<name>-<hash>` (what `mtpeft train` wrote; the demo's
            shared run is `demo_workspace/runs/demo-multi-<hash>`), or an export folder.
        device: `"cpu"`, `"cuda"`, `"cuda:1"`, ...; None: the GPU when there is one (an export folder:
            `"cpu"`, or `"cuda"` where onnxruntime has its CUDA provider).
        batch_size: Snippets per backbone pass. Snippets are sorted by length first, so long ones share
            batches with each other and padding stays small.

    Returns:
        The loaded run.

    Raises:
        ConfigError: `run_dir` is not a directory.
        InputError: `batch_size` is not a positive integer.
        DamagedFiles: the run's `best/` (or the export folder) does not match its manifest (a damaged or
            partial copy).
        ModelLoadError: the base model cannot be loaded (unknown name, no network and no local copy).
        MissingExtra: a run directory, where PyTorch is not installed (`pip install 'mtpeft[train]'`).

    Example:
        ```python
        run = mtpeft.load("demo_workspace/runs/demo-multi-1a2b3c4d5e", device="cpu")
        run.analyze("def f(x): return eval(x)")
        ```
    """
    path = _run_path(run_dir)
    _check_batch_size(batch_size)
    if is_export(path):
        from mtpeft.export.runtime import load_export

        return load_export(path, device=device, batch_size=batch_size)
    chosen = _device(device)
    from mtpeft.modeling.shared_base import load_one

    loaded = load_one(path, chosen)
    return Run(loaded.trained, path, batch_size=batch_size, memory=loaded.memory)


def load_many(
    run_dirs: Iterable[str | Path],
    *,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Run | ExportedRun]:
    """Load several trained runs, in order; runs on the same base model share ONE copy of it.

    Runs trained from the same base (same model; for the random `tiny-*` models also the same seed) with
    peft methods of one family (LoRA/DoRA, IA3, prefix, prompt, adapter, parallel-adapter) each add only
    their adapter and heads; the others (`full`, another base) load on their own backbone, as `load` does
    (see `mtpeft.modeling.shared_base`). Inference must stay single-threaded: runs on one backbone switch
    its active adapter before each pass. An export folder among them loads on its own, as `load` does.

    Args:
        run_dirs: Run directories (a list, not one path). A directory given twice is loaded once.
        device: As for `load`.
        batch_size: As for `load`.

    Returns:
        One `Run` per directory, in the order given (the same object for a directory given twice).
        `Run.memory` says what loading each one added.

    Raises:
        InputError: one path instead of a list, or an empty list.
        ConfigError: a path that is not a directory.
    """
    if isinstance(run_dirs, (str, Path)):
        raise InputError(f"load_many() takes a list of run directories, not one ({run_dirs}); or use load()")
    paths = [_run_path(run_dir) for run_dir in run_dirs]
    if not paths:
        raise InputError("load_many() needs at least one run directory (workspace/runs/<run>)")
    _check_batch_size(batch_size)
    unique = list(dict.fromkeys(path.resolve() for path in paths))
    runs: dict[Path, Run | ExportedRun] = {}
    for path in [path for path in unique if is_export(path)]:
        runs[path] = load(path, device=device, batch_size=batch_size)
    trained = [path for path in unique if path not in runs]
    if trained:
        from mtpeft.modeling.shared_base import load_shared

        loaded = load_shared(trained, _device(device))
        for path, one in zip(trained, loaded, strict=True):
            runs[path] = Run(one.trained, path, batch_size=batch_size, memory=one.memory)
    return [runs[path.resolve()] for path in paths]


def _unmeasured(model: MultiTaskModel) -> MemoryUse:
    """For a Run built by hand (not by load / load_many): its parameters, and no RSS measurement."""
    from mtpeft.modeling.shared_base import MemoryUse, parameter_bytes

    return MemoryUse(
        shared_backbone_with=None,
        parameter_bytes_added=parameter_bytes(model.parameters(), set()),
        rss_bytes_added=0,
    )


def _run_path(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError("no such run directory (expected workspace/runs/<run>)", path=path)
    return path


def _check_batch_size(batch_size: object) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")


def _device(device: str | torch.device | None) -> torch.device:
    require_train(
        "loading a run directory",
        " (or export the run on a machine that has it, `mtpeft export RUN --out DIR`, and load that folder)",
    )
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1): {err}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use device='cpu'")
    return chosen


class BaseRun:
    """What every loaded run answers the same way, whatever runs its model (PyTorch: `Run`; ONNX Runtime:
    `mtpeft.export.runtime.ExportedRun`): its tasks, choosing them by name and kind, their token limits,
    turning probabilities into Predictions, and search over an index.

    A subclass sets `_tasks`, `max_positions` and `model_name`, and says which tasks `analyze`, `compare`,
    `embed` and `generate` answer (`snippet_tasks`, `pair_tasks`, `retrieval_tasks`, `generation_tasks`).
    """

    _tasks: dict[str, TaskInfo]
    max_positions: int | None  # positions the backbone has embeddings for (None: not known)
    model_name: str  # the base model, as messages name it
    batch_size: int
    max_batch_tokens: int | None

    @property
    def snippet_tasks(self) -> list[str]:
        raise NotImplementedError

    @property
    def pair_tasks(self) -> list[str]:
        raise NotImplementedError

    @property
    def retrieval_tasks(self) -> list[str]:
        raise NotImplementedError

    @property
    def generation_tasks(self) -> list[str]:
        raise NotImplementedError

    def embed(
        self,
        snippets: str | Sequence[str],
        task: str | None = None,
        *,
        query: bool = False,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        raise NotImplementedError

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        """The run's tasks by name, in the run's order."""
        return dict(self._tasks)

    @property
    def max_tokens(self) -> int:
        """The smallest code limit of the run's snippet and pair tasks (all tasks when it has none of those):
        a snippet longer than this is truncated for at least one task."""
        names = self.snippet_tasks + self.pair_tasks or list(self._tasks)
        return min(self._tasks[n].max_length for n in names)

    def token_limit(self, task: str | None, *, query: bool = False) -> int:
        """Tokens a call for `task` truncates its inputs to (None: embed()'s pooled vectors, max_tokens)."""
        return self._limit(task, None, query=query) if task else self.max_tokens

    def embedding_task(self, task: str | None = None, *, query: bool = False) -> str | None:
        """The retrieval task whose vectors `embed(task=task)` gives; None for pooled vectors."""
        if task is not None or self.retrieval_tasks or query:
            return self._one(task, self.retrieval_tasks, "embed", first=True)
        return None

    @overload
    def search(self, query: str, k: int = 10, *, index: str | Path | SearchIndex) -> list[Hit]: ...

    @overload
    def search(
        self, query: Sequence[str], k: int = 10, *, index: str | Path | SearchIndex
    ) -> list[list[Hit]]: ...

    def search(
        self, query: str | Sequence[str], k: int = 10, *, index: str | Path | SearchIndex
    ) -> list[Hit] | list[list[Hit]]:
        """The `k` indexed units (functions, methods, tests) most similar to each query.

        Args:
            query: A natural-language query, or a list of them.
            k: How many hits per query.
            index: The folder `mtpeft index` wrote, or a loaded `SearchIndex`. It must have been built
                by this run (same `best/` files): another run's index is refused.

        Returns:
            For a single str, a list of `Hit` (best first: rank, cosine score, path, name, lines); for a
            list of queries, one such list per query.

        Raises:
            InputError: `k` is not a positive integer, or a query is not a non-blank str.
            SearchIndexError: the index is missing, partial, damaged, or built by another run (a
                `DataError` whose message says to rebuild it).
        """
        from mtpeft.index import SearchIndex, load_index

        loaded = index if isinstance(index, SearchIndex) else load_index(index)
        loaded.check_run(self)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        texts, single = _texts(query, "query", role="query")
        vectors = self.embed(texts, task=loaded.task, query=True)
        hits: list[list[Hit]] = loaded.search(vectors, k)
        return hits[0] if single else hits

    # ---- batching and answers ---------------------------------------------------------------------
    def _length_batches(self, order: list[int], lengths: list[int]) -> Iterator[list[int]]:
        """Consecutive slices of `order` (longest first): at most batch_size rows and, when
        max_batch_tokens is set, at most that many padded tokens (rows x the slice's first, longest)."""
        start = 0
        while start < len(order):
            size = self.batch_size
            if self.max_batch_tokens:
                size = max(1, min(size, self.max_batch_tokens // lengths[start]))
            yield order[start : start + size]
            start += size

    def _predictions(self, name: str, table: np.ndarray) -> Iterable[Prediction]:
        """One Prediction per row of a task's probabilities [n, labels] (float32 numpy)."""
        labels = self._tasks[name].labels
        for row, best in zip(table, table.argmax(-1).tolist(), strict=True):
            yield {
                "label": labels[best],
                "probability": float(row[best]),
                "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }

    # ---- task names and limits ----------------------------------------------------------------------
    def _limit(self, name: str, max_tokens: int | None, *, query: bool = False) -> int:
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
                raise InputError(f"max_tokens must be an integer of at least 2, not {max_tokens!r}")
            if self.max_positions and max_tokens > self.max_positions:
                raise InputError(
                    f"max_tokens {max_tokens} is more than the {self.max_positions} positions "
                    f"{self.model_name} reads; use at most {self.max_positions}"
                )
            return max_tokens
        task = self._tasks[name]
        return task.max_query_length if query else task.max_length

    def _select(self, tasks: str | Sequence[str] | None, allowed: list[str], what: str) -> list[str]:
        if tasks is None:
            if not allowed:
                raise InputError(f"this run has no task {what}() answers; {self._use_instead(what)}")
            return list(allowed)
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        if not names:
            raise InputError(f"{what}(tasks=[]) names no task; leave tasks out for all of {allowed}")
        for name in names:
            self._check_task(name, allowed, what)
        return list(dict.fromkeys(names))

    def _one(self, task: str | None, allowed: list[str], what: str, *, first: bool = False) -> str:
        if task is None:
            if len(allowed) == 1 or (first and allowed):
                return allowed[0]
            if not allowed:
                raise InputError(f"this run has no task {what}() answers; {self._use_instead(what)}")
            raise InputError(f"{what}() needs task=...: this run has {len(allowed)} such tasks, {allowed}")
        self._check_task(task, allowed, what)
        return task

    def _check_task(self, name: object, allowed: list[str], what: str) -> None:
        if not isinstance(name, str) or name not in self._tasks:
            raise InputError(f"unknown task {name!r}; this run's tasks: {self._listing()}")
        if name not in allowed:
            kind = self._tasks[name].kind
            hint = self._use_instead(what, kind)
            raise InputError(f"{what}() cannot answer task '{name}' ({kind}); {hint}")

    def _use_instead(self, what: str, kind: str | None = None) -> str:
        entries = {
            "analyze": "binary/multiclass",
            "compare": "pair",
            "embed": "retrieval",
            "generate": "generation and instruct",
        }
        hints = {
            "pair": "compare(a, b, task=...)",
            "retrieval": "embed() or search()",
            "generation": "generate(code, task=...)",
        }
        hint = hints.get(kind or "", "analyze()")
        return f"{what}() answers {entries[what]} tasks ({hint} for this one); run tasks: {self._listing()}"

    def _listing(self) -> str:
        return ", ".join(f"{t.name} ({t.kind})" for t in self._tasks.values())


class Run(BaseRun):
    """A trained run ready for inference: every task of the run from one loaded model.

    Build it with `load` or `load_many`, not directly. Inputs are batched by length (sorted, padded per
    batch, answered in the caller's order) under `torch.inference_mode()`, and truncated per task to the
    `max_length` the run was trained with (`max_tokens=` overrides it). A snippet within every requested
    task's limit is encoded once for all of them.

    Every method raises `InputError` for bad input: not a str, an empty list, a lone surrogate, blank
    code, an unknown task, or a task of the wrong kind for the method (the message names the method
    that answers it).

    Attributes:
        run_dir: The run directory, absolute.
        run_id: The run's id in its store (None for a directory copied without `run.json`).
        config: The run's resolved train config.
        device: Where the model is.
        memory: What loading this run added (the backbone it shares, if any; its parameter bytes; RSS).
    """

    def __init__(
        self,
        trained: TrainedRun,
        run_dir: Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        memory: MemoryUse | None = None,
    ) -> None:
        self.model: MultiTaskModel = trained.model
        self.config: TrainConfig = trained.config
        self.tokenizer = trained.backbone.tokenizer
        self.model_info = trained.backbone.info
        self.model_name = self.model_info.name
        # Positions the backbone has embeddings for: a longer max_tokens would fail inside the model.
        self.max_positions: int | None = getattr(
            trained.backbone.model.config, "max_position_embeddings", None
        )
        self.run_dir = Path(run_dir).resolve()
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        # Padded tokens per backbone pass (None: batch_size alone bounds it). On a CPU, long padded batches
        # cost more per snippet than short ones; a server sets this so a mixed batch splits by length.
        self.max_batch_tokens: int | None = None
        self.run_id = read_run_id(self.run_dir)  # None for a run directory copied without run.json
        self._tasks = _task_infos(self.model, self.config)
        self._fingerprint: str | None = None
        self._reuse: dict[bytes, torch.Tensor] | None = None  # see reusing_encodings
        self._reuse_limit = 0
        # A task-conditioned module (MTL-LoRA) runs differently per task: one encode per task, not shared.
        self._per_task = self.model.task_conditioned
        # What loading this run added: the backbone it shares (if any), its parameter bytes, RSS growth.
        self.memory: MemoryUse = memory if memory is not None else _unmeasured(self.model)

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t.name} ({t.kind})" for t in self._tasks.values())
        return f"<mtpeft.Run {self.run_dir.name}: {self.model_info.name}, {self.config.method}; {tasks}>"

    # ---- what the run can do ------------------------------------------------------------------------
    @property
    def snippet_tasks(self) -> list[str]:
        """Tasks `analyze` answers: one snippet in, a label out (binary, multiclass), through a head or,
        in formulation instruct, through the LM head's likelihood of each label word."""
        heads = self.model.snippet_tasks()
        return [n for n in self._tasks if n in heads or self._instruct_kind(n) in ("binary", "multiclass")]

    @property
    def pair_tasks(self) -> list[str]:
        """Tasks `compare` answers: two snippets in, a label out (clone detection), head or instruct."""
        from mtpeft.heads.classification import ClassificationHead

        heads = [n for n, h in self.model.heads.items() if isinstance(h, ClassificationHead) and h.is_pair]
        return [n for n in self._tasks if n in heads or self._instruct_kind(n) == "pair"]

    def _instruct_kind(self, name: str) -> str | None:
        """The kind of a classification task trained through the LM head (None: a head's, or generation)."""
        return self._tasks[name].kind if name in self.model.lm_tasks else None

    @property
    def retrieval_tasks(self) -> list[str]:
        """Tasks whose vectors `embed` and `search` use (code search)."""
        from mtpeft.heads.retrieval import RetrievalHead

        return [n for n, h in self.model.heads.items() if isinstance(h, RetrievalHead)]

    @property
    def generation_tasks(self) -> list[str]:
        """Tasks `generate` answers: trained through the LM head (summaries, repairs, label words)."""
        return list(self.model.lm_tasks)

    @property
    def info(self) -> dict[str, str]:
        """Facts for reports: run directory and id, model, method, device, calibration."""
        calibration = self.model.calibration
        return {
            "run": str(self.run_dir),
            "run_id": self.run_id or "",
            "model": self.model_info.name,
            "method": self.config.method,
            "device": str(self.device),
            "calibration": calibration.describe() if calibration is not None else UNCALIBRATED,
            "ood": self.ood.describe() if self.ood is not None else NO_OOD,
        }

    @property
    def calibration(self) -> Calibration | None:
        """The run's calibration (temperatures, validation outputs, OOD statistics); None: uncalibrated."""
        return self.model.calibration

    @property
    def ood(self) -> OodStats | None:
        """The run's out-of-distribution statistics (mtpeft.evaluation.ood); None where it has none."""
        calibration = self.model.calibration
        return calibration.ood if calibration is not None else None

    @property
    def temperatures(self) -> dict[str, float]:
        """Each calibrated task's temperature (its probabilities are softmax(logits / T)); empty for an
        uncalibrated run (`info["calibration"]` is then "uncalibrated"; `mtpeft calibrate RUN` fits it)."""
        calibration = self.model.calibration
        return dict(calibration.temperatures) if calibration is not None else {}

    @property
    def fingerprint(self) -> str:
        """sha256 of the deployable files (best/): what an index records to refuse another run's vectors."""
        if self._fingerprint is None:
            self._fingerprint = run_fingerprint(self.run_dir)
        return self._fingerprint

    # ---- inference --------------------------------------------------------------------------------
    def count_tokens(self, codes: Sequence[str]) -> list[int]:
        """Tokens of each snippet (special tokens included, as the limits count them), before truncation."""
        texts, _ = _texts(codes, "snippet")
        counts: list[int] = []
        for start in range(0, len(texts), _TOKEN_COUNT_CHUNK):
            chunk = texts[start : start + _TOKEN_COUNT_CHUNK]
            counts += [len(ids) for ids in self.tokenizer(chunk, verbose=False)["input_ids"]]
        return counts

    @overload
    def analyze(
        self, snippets: str, tasks: str | Sequence[str] | None = None, *, max_tokens: int | None = None
    ) -> dict[str, Prediction]: ...

    @overload
    def analyze(
        self,
        snippets: Sequence[str],
        tasks: str | Sequence[str] | None = None,
        *,
        max_tokens: int | None = None,
    ) -> list[dict[str, Prediction]]: ...

    def analyze(
        self,
        snippets: str | Sequence[str],
        tasks: str | Sequence[str] | None = None,
        *,
        max_tokens: int | None = None,
    ) -> dict[str, Prediction] | list[dict[str, Prediction]]:
        """Every one-snippet task (or `tasks`) for each snippet, from one backbone pass per snippet.

        Args:
            snippets: One snippet of code, or a list of them.
            tasks: A task name or a list of them, from `snippet_tasks` (binary and multiclass tasks, with
                a head or in the instruct formulation); None: all of them.
            max_tokens: Truncate every snippet to this many tokens instead of each task's trained limit.

        Returns:
            For a list, a list (same order) of `{task: Prediction}`; for a single str, one such dict.
        """
        import torch

        texts, single = _texts(snippets, "snippet", role="code")
        names = self._select(tasks, self.snippet_tasks, "analyze")
        limits = {n: self._limit(n, max_tokens) for n in names}
        headed = {n: limit for n, limit in limits.items() if n not in self.model.lm_tasks}
        pooled, vectors = self._pooled_and_ood(texts, headed)
        answers: list[dict[str, Prediction]] = [{} for _ in texts]
        familiarity = self._familiarity(texts, vectors) if names else [{} for _ in texts]
        with torch.inference_mode():
            for name in names:
                if name in headed:
                    head = self.model.heads[name]
                    probs = head.predict({head.inputs[0]: pooled[name]})["probs"]
                else:  # instruct: a pass of its own (the prompt holds the task's question)
                    probs = self._choose(name, texts, None, limits[name])
                for answer, prediction, ood in zip(
                    answers, self._predictions(name, _table(probs)), familiarity, strict=True
                ):
                    answer[name] = {**prediction, **ood}  # type: ignore[typeddict-item]
        return answers[0] if single else answers

    def _pooled_and_ood(
        self, texts: list[str], headed: dict[str, int]
    ) -> tuple[dict[str, torch.Tensor], np.ndarray | None]:
        """The tasks' pooled vectors and, with a shared module and OOD statistics, the vectors at the
        statistics' limit from the same encode (a sequence within every limit is encoded once)."""
        stats = self.ood
        if not headed or stats is None or self._per_task:
            return (self._task_pooled(texts, headed) if headed else {}), None
        both = self._pooled(texts, [*headed.values(), stats.limit])
        return {n: both[limit] for n, limit in headed.items()}, both[stats.limit].cpu().numpy()

    def _familiarity(self, texts: list[str], vectors: np.ndarray | None) -> list[dict[str, float | bool]]:
        """Per text, its OOD score and whether it is unfamiliar (empty dicts without statistics)."""
        stats = self.ood
        if stats is None:
            return [{} for _ in texts]
        if vectors is None:
            vectors = self.ood_vectors(texts, stats.limit, stats.task)
        scores = stats.scores(vectors)
        return [
            {"ood_score": float(s), "unfamiliar": bool(u)}
            for s, u in zip(scores, stats.unfamiliar(scores), strict=True)
        ]

    def ood_vectors(self, texts: Sequence[str], limit: int, task: str | None = None) -> np.ndarray:
        """Pooled vectors [len(texts), hidden] at `limit` tokens: what OOD statistics fit and score."""
        return self._pooled(texts, [limit], task=task)[limit].cpu().numpy()

    def _choose(self, name: str, texts: list[str], others: list[str] | None, limit: int) -> torch.Tensor:
        return self.model.choose(name, texts, others, max_length=limit, batch_size=self.batch_size)

    @overload
    def compare(
        self, a: str, b: str, task: str | None = None, *, max_tokens: int | None = None
    ) -> Prediction: ...

    @overload
    def compare(
        self,
        a: str | Sequence[str],
        b: str | Sequence[str],
        task: str | None = None,
        *,
        max_tokens: int | None = None,
    ) -> list[Prediction]: ...

    def compare(
        self,
        a: str | Sequence[str],
        b: str | Sequence[str],
        task: str | None = None,
        *,
        max_tokens: int | None = None,
    ) -> Prediction | list[Prediction]:
        """A pair task's answer (e.g. clone or not) for each pair `(a[i], b[i])`.

        Each distinct snippet is encoded once.

        Args:
            a: One snippet, or a list of them.
            b: One snippet, or a list of them. A single str on one side is compared with every snippet of
                the other; two lists must be of the same length.
            task: A task of `pair_tasks`; may be left out when the run has only one.
            max_tokens: Truncate every snippet to this many tokens instead of the task's trained limit.

        Returns:
            One `Prediction` for two strs, else a list of them, one per pair.
        """
        import torch

        name = self._one(task, self.pair_tasks, "compare")
        left, single_a = _texts(a, "a", role="code")
        right, single_b = _texts(b, "b", role="code")
        if len(left) != len(right) and not (single_a or single_b):
            raise InputError(f"compare() needs as many snippets in a ({len(left)}) as in b ({len(right)})")
        limit = self._limit(name, max_tokens)
        if name in self.model.lm_tasks:
            pairs = max(len(left), len(right))  # a single snippet on one side meets every one of the other
            left, right = left * (pairs // len(left)), right * (pairs // len(right))
            with torch.inference_mode():
                probs = self._choose(name, left, right, limit)
        else:
            pooled = self._pooled(left + right, [limit], task=name)[limit]
            with torch.inference_mode():
                probs = self.model.compare(pooled[: len(left)], pooled[len(left) :], task=name)
        predictions = list(self._predictions(name, _table(probs)))
        return predictions[0] if single_a and single_b else predictions

    def embed(
        self,
        snippets: str | Sequence[str],
        task: str | None = None,
        *,
        query: bool = False,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        """Unit-length vectors of snippets (or of natural-language queries) for similarity search.

        Args:
            snippets: One text, or a list of them.
            task: A task of `retrieval_tasks` whose projection to use; None: the run's first one. A run
                without a retrieval task gives the backbone's pooled vectors, normalised (the space its
                pair heads read).
            query: Embed natural-language queries (truncated to the task's `max_query_length`) rather
                than code.
            max_tokens: Truncate every text to this many tokens instead of the task's trained limit.

        Returns:
            A float32 numpy array `[n, dim]`, or `[dim]` for a single str. The dot product of two rows
            is their cosine similarity.
        """
        import torch

        texts, single = _texts(snippets, "query" if query else "snippet")
        name = self.embedding_task(task, query=query)
        limit = self._limit(name, max_tokens, query=query) if name else max_tokens or self.max_tokens
        pooled = self._pooled(texts, [limit], task=name)[limit]
        with torch.inference_mode():
            if name is None:
                vectors = torch.nn.functional.normalize(pooled, dim=-1)
            else:
                vectors = self.model.heads[name].project(pooled)
        out = vectors.float().cpu().numpy()
        return out[0] if single else out

    def generate(
        self,
        snippets: str | Sequence[str],
        task: str | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> str | list[str]:
        """What a task trained through the LM head writes for each snippet.

        A summary, the repaired code, or an instruct task's label word. The prompts and decoding are the
        ones evaluation used, so a snippet of the test split gets the hypothesis evaluation scored.

        Args:
            snippets: One snippet, or a list of them.
            task: A task of `generation_tasks`; may be left out when the run has only one.
            max_new_tokens: At most this many new tokens (default: the task's `max_target_length`).
            num_beams: Beam search with this many beams; None or 1: greedy.

        Returns:
            One str for a single str, else a list of str in the same order.
        """
        import torch

        texts, single = _texts(snippets, "snippet", role="code")
        name = self._one(task, self.generation_tasks, "generate")
        with torch.inference_mode():
            out = self.model.generate(
                name, texts, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=self.batch_size
            )
        return out[0] if single else out

    def prompt_tokens(self, snippets: Sequence[str], task: str) -> list[int]:
        """Tokens of the prompt each snippet becomes for a task `generate` answers (what a served
        completion reports as its prompt_tokens)."""
        texts, _ = _texts(snippets, "snippet")
        name = self._one(task, self.generation_tasks, "generate")
        return self.model.prompt_lengths(name, texts)

    @contextmanager
    def reusing_encodings(self, max_bytes: int = 512 * 2**20) -> Iterator[Run]:
        """Inside the block, a token sequence already encoded is not encoded again.

        For callers that ask several questions about the same code, like a scan: its clone search embeds
        and compares units the analysis already encoded (same truncation, same pooled vectors). Off by
        default so that memory stays flat; at most `max_bytes` of pooled vectors are kept, then nothing
        more is added.
        """
        hidden = self.model_info.hidden_size
        self._reuse, self._reuse_limit = {}, max(0, max_bytes // (4 * hidden))
        try:
            yield self
        finally:
            self._reuse = None

    def encode_ahead(self, texts_by_limit: Mapping[int, Sequence[str]]) -> None:
        """Encode every text at its limit in ONE length-sorted encode, for the calls that follow to reuse.

        Only inside reusing_encodings(). For callers that gather different questions at once (the
        server's micro-batches mix analyze, compare and embed requests): without it each call would run
        its own backbone passes over its own inputs.
        """
        if self._reuse is None:
            raise RuntimeError("encode_ahead() only helps inside `with run.reusing_encodings():`")
        if self._per_task:  # which task each text is for is not known here, and each encodes its own
            return
        sequences: dict[tuple[int, ...], None] = {}
        for limit, texts in texts_by_limit.items():
            checked, _ = _texts(list(texts), "snippet")
            ids = self.tokenizer(checked, truncation=True, max_length=limit, padding=False)["input_ids"]
            sequences.update(dict.fromkeys(tuple(seq) for seq in ids))
        if sequences:
            self._encode_or_reuse(list(sequences))

    # ---- the scanner's Analyzer protocol, on the same methods --------------------------------------
    # scan_tree calls analyze(codes, tasks, max_tokens=...), embed(codes, max_tokens=...) and
    # compare(codes_a, codes_b, task, max_tokens=...): the signatures above already fit, so there is no
    # adapter and no second path.

    # ---- one encode per distinct token sequence -------------------------------------------------------
    def _task_pooled(self, texts: Sequence[str], limits: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Each task's pooled vectors of the texts at its limit: one encode per distinct limit, or one per
        task where the module is task-conditioned."""
        if self._per_task:
            return {name: self._pooled(texts, [limit], task=name)[limit] for name, limit in limits.items()}
        pooled = self._pooled(texts, list(limits.values()))
        return {name: pooled[limit] for name, limit in limits.items()}

    def _pooled(
        self, texts: Sequence[str], limits: Iterable[int], task: str | None = None
    ) -> dict[int, torch.Tensor]:
        """Pooled vectors [len(texts), hidden] of the texts truncated at each limit (run for `task` where the
        module is task-conditioned).

        Tokenised exactly as training and evaluation do (modeling/inputs.tokenize_task); every distinct
        token sequence is encoded once, so a snippet within all limits (or given twice) costs one pass.
        """
        sequences: dict[tuple[int, ...], int] = {}
        rows: dict[int, list[int]] = {}
        for limit in dict.fromkeys(limits):
            ids = self.tokenizer(list(texts), truncation=True, max_length=limit, padding=False)["input_ids"]
            rows[limit] = [sequences.setdefault(tuple(seq), len(sequences)) for seq in ids]
        import torch

        pooled = self._encode_or_reuse(list(sequences), task)
        return {limit: pooled[torch.tensor(r, device=pooled.device)] for limit, r in rows.items()}

    def _encode_or_reuse(self, sequences: list[tuple[int, ...]], task: str | None = None) -> torch.Tensor:
        import torch

        task = task if self._per_task else None  # a shared module's vectors serve every task
        if self._reuse is None:
            return self._encode(sequences, task)
        keys = [_sequence_key(seq, task) for seq in sequences]
        missing = [i for i, key in enumerate(keys) if key not in self._reuse]
        fresh = (
            dict(zip(missing, self._encode([sequences[i] for i in missing], task), strict=True))
            if missing
            else {}
        )
        for i, vector in fresh.items():
            if len(self._reuse) < self._reuse_limit:
                self._reuse[keys[i]] = vector
        return torch.stack([fresh[i] if i in fresh else self._reuse[key] for i, key in enumerate(keys)])

    def _encode(self, sequences: list[tuple[int, ...]], task: str | None = None) -> torch.Tensor:
        """One backbone pass per sequence, in length-sorted batches padded to their longest member."""
        import torch

        from mtpeft.modeling.inputs import pad

        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        out: torch.Tensor | None = None
        with torch.inference_mode():
            for chunk in self._length_batches(order, [len(sequences[i]) for i in order]):
                batch = pad([list(sequences[i]) for i in chunk], self.tokenizer.pad_token_id)
                vectors = self.model.encode(
                    batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), task=task
                ).float()
                if out is None:
                    out = vectors.new_empty((len(sequences), vectors.shape[-1]))
                out[torch.tensor(chunk, device=self.device)] = vectors
        assert out is not None  # _texts never lets an empty list through
        return out


# ---- inputs -------------------------------------------------------------------------------------------
def _texts(
    values: str | Sequence[str] | Iterable[str], what: str, *, role: str | None = None
) -> tuple[list[str], bool]:
    """(texts, given as one str?); each checked: a str, valid Unicode (tokenizers reject lone surrogates),
    and, for a `role` ("code", "query") that is analysed, not blank (data.example.blank_text_problem)."""
    single = isinstance(values, str)
    if single:
        texts = [values]
    elif isinstance(values, (bytes, bytearray, Mapping)) or not isinstance(values, Iterable):
        raise InputError(f"expected a str or a list of str for the {what}s, got {type(values).__name__}")
    else:
        texts = list(values)
    if not texts:
        raise InputError(f"no {what}s given (an empty list): pass at least one")
    for position, text in enumerate(texts):
        where = f"{what} {position}" if not single else what
        _check_text(text, where)
        problem = blank_text_problem(text, role) if role else None  # type: ignore[arg-type]
        if problem:
            raise InputError(f"{where} {problem}; leave it out")
    return texts, single  # type: ignore[return-value]


def _check_text(text: object, where: str) -> None:
    if not isinstance(text, str):
        hint = " (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(text, bytes) else ""
        raise InputError(f"{where} is {type(text).__name__}, not str{hint}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{where} holds a lone surrogate U+{ord(text[err.start]):04X} at character {err.start}, which is "
            "not valid Unicode text; read the file with errors='replace' or fix the text"
        ) from None


def _table(probs: torch.Tensor) -> np.ndarray:
    """A task's probabilities as float32 numpy [n, labels], what BaseRun._predictions reads."""
    return probs.float().cpu().numpy()


def _sequence_key(sequence: tuple[int, ...], task: str | None = None) -> bytes:
    """A compact key for a token sequence (a tuple of ints costs far more memory than its hash), and for
    the task it was encoded for where that matters (two fixed-size digests: no ambiguity)."""
    key = hashlib.blake2b(np.asarray(sequence, dtype=np.int64).tobytes(), digest_size=16).digest()
    if task is None:
        return key
    return key + hashlib.blake2b(task.encode("utf-8", "surrogatepass"), digest_size=8).digest()


# ---- the run's tasks ------------------------------------------------------------------------------------
def _task_infos(model: MultiTaskModel, config: TrainConfig) -> dict[str, TaskInfo]:
    """Each head's task with the limits of its config entry (entries and heads are in the same order)."""
    entries = list(config.tasks)
    by_label = {e.label: e for e in entries}
    aligned = len(entries) == len(model.tasks)
    infos: dict[str, TaskInfo] = {}
    for position, (name, spec) in enumerate(model.tasks.items()):
        entry = entries[position] if aligned else by_label.get(name, TaskEntry(task=name))
        infos[name] = TaskInfo(
            name=name,
            kind=spec.kind,
            labels=tuple(spec.labels or ()),
            base=Path(entry.task).stem,
            description=spec.description,
            max_length=entry.max_length,
            max_query_length=entry.max_query_length,
            metrics=tuple(spec.metrics),
        )
    return infos
