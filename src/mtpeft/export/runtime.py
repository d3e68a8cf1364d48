"""An exported run answered without PyTorch: ONNX Runtime for the graph, `tokenizers` for the tokens.

    run = mtpeft.load("exported/")        # api.load sees export.json and builds an ExportedRun
    run.analyze(["def f(x): return eval(x)"])
    run.compare(a, b, task="clone"); run.embed(snippets); run.search("parse a config", index="idx/")

The same answers as the PyTorch `Run` (`mtpeft export` measured how close, and wrote it into
export.json), through the same `BaseRun` task selection and limits: inputs are tokenised as training did
(truncated per task to its `max_length`), every distinct token sequence runs through the graph once,
in length-sorted batches padded to their longest member, and each task reads its own output of that one
pass (`probs.<task>`, `embedding.<task>`, `pooled`). Pair tasks apply their small head to two pooled
vectors in numpy, from pair_heads.npz; OOD scores read the pooled vectors as the PyTorch run does.

Imports numpy, onnxruntime, tokenizers and mtpeft's torch-free modules only (the `mtpeft[onnx]` install).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from mtpeft.api import BaseRun, Prediction, TaskInfo, _sequence_key, _texts
from mtpeft.calibration_file import NO_OOD, UNCALIBRATED, read_calibration
from mtpeft.errors import InputError
from mtpeft.export.folder import (
    CALIBRATION_DIR,
    POOLED_OUTPUT,
    ExportFolder,
    embedding_output,
    probs_output,
    read_export,
)
from mtpeft.extras import missing_extra

if TYPE_CHECKING:
    from mtpeft.calibration_file import Calibration
    from mtpeft.evaluation.ood import OodStats

_TOKEN_COUNT_CHUNK = 1024  # texts per tokenizer call when only counting
PassHook = Callable[[int, int], None]  # (rows, real tokens) of one graph run: what serve's metrics count


@dataclass(frozen=True)
class PairHead:
    """A pair task's classification head as numpy arrays: MLP on [u, v, |u - v|, u * v] (heads/
    classification.py), probabilities softmax(logits / temperature)."""

    w1: np.ndarray  # [hidden/2, 4 * hidden]
    b1: np.ndarray
    w2: np.ndarray  # [labels, hidden/2]
    b2: np.ndarray
    temperature: float

    def probabilities(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """[n, labels] for pooled vectors u, v [n, hidden] (float32 throughout, as the PyTorch head)."""
        features = np.concatenate([u, v, np.abs(u - v), u * v], axis=-1)
        hidden = np.tanh(features @ self.w1.T + self.b1)
        scaled = (hidden @ self.w2.T + self.b2) / np.float32(self.temperature)
        scaled = scaled - scaled.max(axis=-1, keepdims=True)
        weights = np.exp(scaled)
        return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)


PAIR_HEAD_ARRAYS = ("w1", "b1", "w2", "b2", "temperature")


def read_pair_heads(path: Path | None, tasks: Sequence[str]) -> dict[str, PairHead]:
    """Each pair task's head from pair_heads.npz (keys `<task>/<array>`; no pickles)."""
    if not tasks:
        return {}
    assert path is not None  # read_export's checks: a pair task comes with the file
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    heads = {}
    for task in tasks:
        w1, b1, w2, b2, temperature = (arrays[f"{task}/{part}"] for part in PAIR_HEAD_ARRAYS)
        heads[task] = PairHead(w1, b1, w2, b2, float(temperature))
    return heads


def load_export(path: str | Path, *, device: Any = None, batch_size: int = 32) -> ExportedRun:
    """The export folder at `path` (checked against its manifest) ready to answer; what `mtpeft.load`
    returns for a folder holding export.json."""
    folder = read_export(path)
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ModuleNotFoundError as err:
        problem = missing_extra(err, "loading an export folder")
        if problem is None:
            raise
        raise problem from None
    return ExportedRun(folder, device=device, batch_size=batch_size)


class _HookHandle:
    def __init__(self, hooks: list[PassHook], hook: PassHook) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


class ExportedRun(BaseRun):
    """An export folder ready for inference: the PyTorch `Run`'s answering methods, from ONNX Runtime.

    Build it with `mtpeft.load(EXPORT_DIR)`. Generation is not exported; `generate` says so.

    Attributes:
        run_dir: The export folder, absolute (what reports and indexes name as the run).
        run_id: The id of the run it was exported from (None where that run had none).
        device: The ONNX Runtime execution provider the graph runs on.
        export: The checked folder and its export.json (`export.meta`).
        memory: What loading it added: its graph's bytes and the process's resident-memory growth.
    """

    def __init__(self, folder: ExportFolder, *, device: Any = None, batch_size: int = 32) -> None:
        import psutil

        before = psutil.Process().memory_info().rss
        meta = folder.meta
        self.export = folder
        self.run_dir = folder.path
        self.run_id: str | None = meta["source"].get("run_id")
        self.model_name = str(meta["source"]["model"])
        self.max_positions: int | None = meta.get("max_positions")
        self.batch_size = batch_size
        self.max_batch_tokens: int | None = None  # as Run: padded tokens per graph run, set by a server
        self._tasks = {name: _task_info(name, task) for name, task in folder.tasks.items()}
        self._answers = {name: task["answer"] for name, task in folder.tasks.items()}
        self.tokenizer = _tokenizer(folder)
        self.pad_token_id = int(meta["tokenizer"]["pad_token_id"])
        self.session, self.device = _session(folder, device)
        self._outputs = [output.name for output in self.session.get_outputs()]
        self._columns = _columns(self.session)
        self._width = max(column.stop for column in self._columns.values())
        self._pair_heads = read_pair_heads(folder.pair_heads, self.pair_tasks)
        has_calibration = (folder.path / CALIBRATION_DIR).is_dir()
        self._calibration = read_calibration(folder.path) if has_calibration else None
        self._reuse: dict[bytes, np.ndarray] | None = None  # see reusing_encodings
        self._reuse_limit = 0
        self._pass_hooks: list[PassHook] = []
        self.memory = {
            "shared_backbone_with": None,
            "parameter_bytes_added": folder.graph.stat().st_size,
            "rss_bytes_added": max(0, psutil.Process().memory_info().rss - before),
        }

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t.name} ({t.kind})" for t in self._tasks.values())
        return f"<mtpeft.ExportedRun {self.run_dir.name}: {self.model_name}, {self.precision}; {tasks}>"

    # ---- what the export can do -------------------------------------------------------------------
    @property
    def snippet_tasks(self) -> list[str]:
        return [name for name, answer in self._answers.items() if answer == "probabilities"]

    @property
    def pair_tasks(self) -> list[str]:
        return [name for name, answer in self._answers.items() if answer == "pair"]

    @property
    def retrieval_tasks(self) -> list[str]:
        return [name for name, answer in self._answers.items() if answer == "embedding"]

    @property
    def generation_tasks(self) -> list[str]:
        return []  # `mtpeft export` refuses runs with tasks trained through the LM head

    @property
    def precision(self) -> str:
        """The graph's weights: fp32, or int8 (dynamic quantization)."""
        return self.export.precision

    @property
    def info(self) -> dict[str, str]:
        """Facts for reports, as Run.info gives them; `method` also says how it was exported."""
        source = self.export.meta["source"]
        calibration = self._calibration
        return {
            "run": str(self.run_dir),
            "run_id": self.run_id or "",
            "model": self.model_name,
            "method": f"{source['method']} ({source['adapter']}; ONNX {self.precision})",
            "device": f"onnxruntime {self.device}",
            "calibration": calibration.describe() if calibration is not None else UNCALIBRATED,
            "ood": self.ood.describe() if self.ood is not None else NO_OOD,
        }

    @property
    def calibration(self) -> Calibration | None:
        """The source run's calibration, copied into the folder; None: uncalibrated."""
        return self._calibration

    @property
    def ood(self) -> OodStats | None:
        return self._calibration.ood if self._calibration is not None else None

    @property
    def temperatures(self) -> dict[str, float]:
        """Each calibrated task's temperature (already applied inside the graph and the pair heads)."""
        return dict(self._calibration.temperatures) if self._calibration is not None else {}

    @property
    def fingerprint(self) -> str:
        """What an index built with this export records: an fp32 export's is its source run's (its vectors
        agree with the run's to 1e-4, so either searches the other's index); an int8 export's is its own."""
        return str(self.export.meta["fingerprint"])

    # ---- inference ------------------------------------------------------------------------------
    def count_tokens(self, codes: Sequence[str]) -> list[int]:
        """Tokens of each snippet (special tokens included, as the limits count them), before truncation."""
        texts, _ = _texts(codes, "snippet")
        self.tokenizer.no_truncation()
        counts: list[int] = []
        for start in range(0, len(texts), _TOKEN_COUNT_CHUNK):
            chunk = texts[start : start + _TOKEN_COUNT_CHUNK]
            counts += [len(encoding.ids) for encoding in self.tokenizer.encode_batch(chunk)]
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
        """Every one-snippet task (or `tasks`) for each snippet, from one graph run per distinct token
        sequence (see Run.analyze: same arguments, same answers)."""
        texts, single = _texts(snippets, "snippet", role="code")
        names = self._select(tasks, self.snippet_tasks, "analyze")
        limits = {n: self._limit(n, max_tokens) for n in names}
        stats = self.ood
        rows, table = self._encoded(texts, [*limits.values(), *([stats.limit] if stats else [])])
        familiarity = self._familiarity(self._read(table, rows[stats.limit]) if stats else None, len(texts))
        answers: list[dict[str, Prediction]] = [{} for _ in texts]
        for name in names:
            probs = self._read(table, rows[limits[name]], probs_output(name))
            for answer, prediction, ood in zip(
                answers, self._predictions(name, probs), familiarity, strict=True
            ):
                answer[name] = {**prediction, **ood}  # type: ignore[typeddict-item]
        return answers[0] if single else answers

    def _familiarity(self, vectors: np.ndarray | None, count: int) -> list[dict[str, float | bool]]:
        stats = self.ood
        if stats is None or vectors is None:
            return [{} for _ in range(count)]
        scores = stats.scores(vectors)
        return [
            {"ood_score": float(s), "unfamiliar": bool(u)}
            for s, u in zip(scores, stats.unfamiliar(scores), strict=True)
        ]

    def ood_vectors(self, texts: Sequence[str], limit: int, task: str | None = None) -> np.ndarray:
        """Pooled vectors [len(texts), hidden] at `limit` tokens: what OOD statistics score."""
        rows, table = self._encoded(list(texts), [limit])
        return self._read(table, rows[limit])

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
        """A pair task's answer for each pair `(a[i], b[i])` (see Run.compare); each distinct snippet runs
        through the graph once, the pair head applies in numpy."""
        name = self._one(task, self.pair_tasks, "compare")
        left, single_a = _texts(a, "a", role="code")
        right, single_b = _texts(b, "b", role="code")
        if len(left) != len(right) and not (single_a or single_b):
            raise InputError(f"compare() needs as many snippets in a ({len(left)}) as in b ({len(right)})")
        limit = self._limit(name, max_tokens)
        rows, table = self._encoded(left + right, [limit])
        pooled = self._read(table, rows[limit])
        u, v = np.broadcast_arrays(pooled[: len(left)], pooled[len(left) :])  # one against many
        predictions = list(self._predictions(name, self._pair_heads[name].probabilities(u, v)))
        return predictions[0] if single_a and single_b else predictions

    def embed(
        self,
        snippets: str | Sequence[str],
        task: str | None = None,
        *,
        query: bool = False,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        """Unit-length vectors of snippets or queries (see Run.embed: same arguments, same vectors)."""
        texts, single = _texts(snippets, "query" if query else "snippet")
        name = self.embedding_task(task, query=query)
        limit = self._limit(name, max_tokens, query=query) if name else max_tokens or self.max_tokens
        rows, table = self._encoded(texts, [limit])
        if name is None:
            pooled = self._read(table, rows[limit])
            # torch.nn.functional.normalize's rule: divide by the norm, at least 1e-12.
            out = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        else:
            out = self._read(table, rows[limit], embedding_output(name))
        out = np.ascontiguousarray(out, dtype=np.float32)
        return out[0] if single else out

    def generate(self, snippets: str | Sequence[str], task: str | None = None, **_: Any) -> str | list[str]:
        """Not exported: `mtpeft export` refuses runs with generative tasks; load the run directory."""
        self._one(task, self.generation_tasks, "generate")
        raise AssertionError("unreachable: an export answers no generation task")

    def prompt_tokens(self, snippets: Sequence[str], task: str) -> list[int]:
        self._one(task, self.generation_tasks, "generate")
        raise AssertionError("unreachable: an export answers no generation task")

    # ---- encoding reuse, as Run's (a scan, a server's micro-batches) ------------------------------
    @contextmanager
    def reusing_encodings(self, max_bytes: int = 512 * 2**20) -> Iterator[ExportedRun]:
        """Inside the block, a token sequence already run through the graph is not run again (at most
        `max_bytes` of outputs are kept)."""
        self._reuse, self._reuse_limit = {}, max(0, max_bytes // (4 * self._width))
        try:
            yield self
        finally:
            self._reuse = None

    def encode_ahead(self, texts_by_limit: Mapping[int, Sequence[str]]) -> None:
        """Run every text at its limit through the graph in ONE length-sorted pass, for the calls that
        follow to reuse (only inside reusing_encodings(); see Run.encode_ahead)."""
        if self._reuse is None:
            raise RuntimeError("encode_ahead() only helps inside `with run.reusing_encodings():`")
        sequences: dict[tuple[int, ...], None] = {}
        for limit, texts in texts_by_limit.items():
            checked, _ = _texts(list(texts), "snippet")
            sequences.update(dict.fromkeys(tuple(ids) for ids in self._tokenize(checked, limit)))
        if sequences:
            self._run_or_reuse(list(sequences))

    def watch_passes(self, hook: PassHook) -> _HookHandle:
        """Call `hook(rows, tokens)` after every graph run (what a server's metrics count); the handle's
        remove() stops it. The PyTorch Run is watched through a forward hook on its backbone instead."""
        self._pass_hooks.append(hook)
        return _HookHandle(self._pass_hooks, hook)

    # ---- one graph run per distinct token sequence ---------------------------------------------------
    def _tokenize(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Token ids of each text truncated at `limit`, as the run's transformers tokenizer gives them
        (`truncation=True, max_length=limit`: the same tokenizer.json, special tokens included)."""
        self.tokenizer.enable_truncation(max_length=limit)
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def _encoded(self, texts: list[str], limits: Sequence[int]) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """({limit: row of each text in the table}, the graph outputs of every distinct sequence)."""
        sequences: dict[tuple[int, ...], int] = {}
        rows: dict[int, np.ndarray] = {}
        for limit in dict.fromkeys(limits):
            ids = self._tokenize(texts, limit)
            rows[limit] = np.array([sequences.setdefault(tuple(seq), len(sequences)) for seq in ids])
        return rows, self._run_or_reuse(list(sequences))

    def _read(self, table: np.ndarray, rows: np.ndarray, output: str = POOLED_OUTPUT) -> np.ndarray:
        return table[rows, self._columns[output]]

    def _run_or_reuse(self, sequences: list[tuple[int, ...]]) -> np.ndarray:
        if self._reuse is None:
            return self._run(sequences)
        keys = [_sequence_key(seq) for seq in sequences]
        missing = [i for i, key in enumerate(keys) if key not in self._reuse]
        table = np.empty((len(sequences), self._width), dtype=np.float32)
        if missing:
            table[missing] = self._run([sequences[i] for i in missing])
        for i, key in enumerate(keys):
            if key in self._reuse:
                table[i] = self._reuse[key]
            elif len(self._reuse) < self._reuse_limit:
                self._reuse[key] = table[i].copy()
        return table

    def _run(self, sequences: list[tuple[int, ...]]) -> np.ndarray:
        """Every output of the graph for each sequence, [len(sequences), width], in length-sorted batches
        padded (on the right, with the tokenizer's pad id) to their longest member."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        table = np.empty((len(sequences), self._width), dtype=np.float32)
        for chunk in self._length_batches(order, [len(sequences[i]) for i in order]):
            ids, mask = _padded([sequences[i] for i in chunk], self.pad_token_id)
            outputs = self.session.run(self._outputs, {"input_ids": ids, "attention_mask": mask})
            table[chunk] = np.concatenate([np.asarray(o, dtype=np.float32) for o in outputs], axis=1)
            for hook in self._pass_hooks:
                hook(len(chunk), int(mask.sum()))
        return table


# ---- loading pieces -----------------------------------------------------------------------------------
def _task_info(name: str, task: Mapping[str, Any]) -> TaskInfo:
    return TaskInfo(
        name=name,
        kind=task["kind"],
        labels=tuple(task["labels"]),
        base=task.get("base", ""),
        description=task.get("description", ""),
        max_length=int(task["max_length"]),
        max_query_length=int(task.get("max_query_length", task["max_length"])),
        metrics=tuple(task.get("metrics", ())),
    )


def _tokenizer(folder: ExportFolder) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder.tokenizer))
    tokenizer.no_padding()  # padded per batch here, to the batch's longest sequence
    tokenizer.no_truncation()  # set per call to the task's limit
    return tokenizer


def _session(folder: ExportFolder, device: Any) -> tuple[Any, str]:
    """(the graph's InferenceSession, its provider) on `device`: None the GPU where onnxruntime has its
    CUDA provider, else the CPU; "cpu"; "cuda" / "cuda:N"."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    name, _, index = (str(device) if device is not None else "").partition(":")  # a torch.device too
    if name not in ("", "cpu", "cuda") or (index and not index.isdigit()):
        raise InputError(f"device {device!r}: an export runs on 'cpu' or 'cuda' (or 'cuda:N')")
    if name == "cuda" and "CUDAExecutionProvider" not in available:
        raise InputError(
            f"device {device!r} asked for, but onnxruntime has no CUDA provider here (install "
            "onnxruntime-gpu); use device='cpu'"
        )
    if name == "cuda" or (not name and "CUDAExecutionProvider" in available):
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": int(index or 0)})]
        chosen = f"cuda:{int(index or 0)}"
    else:
        providers, chosen = ["CPUExecutionProvider"], "cpu"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are not the user's
    return ort.InferenceSession(str(folder.graph), options, providers=providers), chosen


def _columns(session: Any) -> dict[str, slice]:
    """Each graph output's columns in the one table a run returns (outputs are [batch, width])."""
    columns, start = {}, 0
    for output in session.get_outputs():
        width = int(output.shape[-1])
        columns[output.name] = slice(start, start + width)
        start += width
    return columns


def _padded(sequences: list[tuple[int, ...]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 ids and their attention mask, as modeling/inputs.pad builds them."""
    longest = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
