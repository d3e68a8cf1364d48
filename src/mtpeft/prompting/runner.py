"""`mtpeft prompt`: ask a general LLM each task's question, score the answers, record a prompting run.

Same examples as fine-tuned runs: the task's split (test) or the seeded subset of `limit` examples that a
fine-tuned run with `max_eval_examples: limit` and the same seed scores (data/subset.py, one definition).
Same metrics and 95% bootstrap intervals (evaluation/metrics.py), same store: one run per answer mode,
mode "prompting" in the store, method "prompt-<mode>-<K>shot" (or "prompt-embed"), with its counts,
intervals and cost in the run's details, majority and TF-IDF scored on the same examples as baselines.

Answers are appended to RUN_DIR/answers.jsonl as they come (answers.py). The same command again finds
the same run directory (it is keyed by what defines the result), asks only what is not answered yet and
finishes the run; a finished run is shown, not redone, unless `fresh` (or it has failed answers: those
are asked again).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from mtpeft import layout
from mtpeft.data.example import Example
from mtpeft.errors import ConfigError, MtpeftError
from mtpeft.prompting.answers import ANSWERS_FILE, AnswerLog, AnswerRecord, prompt_hash
from mtpeft.prompting.backends.base import Answer, Prompt, PromptBackend, ScoringBackend
from mtpeft.prompting.config import EMBED, GENERATE, MODE_SETS, SCORE, PromptConfig, parse_modes
from mtpeft.prompting.scoring import (
    Counts,
    TaskResult,
    score_choices,
    score_labels,
    score_pools,
    score_ranks,
    score_texts,
)
from mtpeft.prompting.templates import Conversation, Template, template_for
from mtpeft.prompting.truncation import fit
from mtpeft.store import RunRecord, RunStore, config_hash
from mtpeft.store.sqlite import PROMPTING, RunNotFound
from mtpeft.tasks.spec import TaskSpec

SCORE_RESERVE = 16  # tokens kept free after a scored prompt for the longest answer word
RESULTS_FILE = "results.json"


@dataclass
class PromptTaskData:
    """One task, read and checked before any model loads."""

    label: str
    spec: TaskSpec
    template: Template
    test: list[Example]
    train: list[Example] | None  # None: no train split (then no shots, no baselines)


@dataclass(frozen=True)
class Request:
    key: str  # the item within its task, as the answer log records it
    prompt: Prompt
    truncated: bool  # the runner cut code to fit the context
    tokens: int  # prompt tokens as the backend counts them
    sha: str


@dataclass
class ModeRun:
    """One prompting run (one answer mode) as the CLI shows it."""

    run_id: str
    run_dir: Path
    name: str
    mode: str
    results: dict[str, dict[str, Any]]  # task -> details (metrics, intervals, counts, cost, protocol)
    baselines: dict[str, dict[str, dict[str, float]]]
    cost: dict[str, Any]
    reused: bool = False  # already finished: shown from the store, nothing asked
    notes: list[str] = field(default_factory=list)


# ---- tasks and data ------------------------------------------------------------------------------
def load_tasks(config: PromptConfig, *, source: str | Path | None = None) -> list[PromptTaskData]:
    """Every task's spec, template, test subset and train split; one located error for the first problem."""
    from mtpeft.data.formats.base import load_split
    from mtpeft.data.subset import subsample
    from mtpeft.tasks import get_task

    loaded = []
    for position, entry in enumerate(config.tasks):
        where = f"tasks.{position}"
        try:
            spec = get_task(entry.task).with_name(entry.label)
            template = template_for(spec)
        except ConfigError as err:
            raise ConfigError(err.reason if err.path is None else str(err), path=source, field=where) from err
        data = entry.data or spec.data
        if data is None:
            raise ConfigError(
                f"task '{spec.name}' names no data folder; give NAME=DATA_DIR", path=source, field=where
            )
        test = subsample(load_split(spec, data, config.split), config.limit, seed=config.seed)
        train = _train_split(spec, data, needed=config.shots > 0)
        loaded.append(PromptTaskData(entry.label, spec, template, test, train))
    return loaded


def _train_split(spec: TaskSpec, data: str, *, needed: bool) -> list[Example] | None:
    from mtpeft.data.formats.base import available_splits, load_split

    if not needed and "train" not in available_splits(spec, data):
        return None  # zero-shot needs no train split; only the baselines are skipped
    return load_split(spec, data, "train")  # few-shot without one: DataError naming the folder


# ---- modes -------------------------------------------------------------------------------------------
def usable_modes(
    config: PromptConfig, tasks: list[PromptTaskData], scoring: bool
) -> tuple[list[str], list[str]]:
    """(modes to run, notes on the ones left out). Score and embed need a ScoringBackend (local models)."""
    notes: list[str] = []
    named = {p.strip().lower() for p in config.mode.split(",")}
    modes = list(parse_modes(config.mode))
    if not scoring:
        local_only = [m for m in modes if m in (SCORE, EMBED)]
        if local_only and not named & set(MODE_SETS):
            raise ConfigError(
                f"mode {', '.join(local_only)} needs a local model (log-likelihoods and hidden states); "
                f"{config.model} only generates: use --mode generate",
                field="mode",
            )
        notes += [f"{m} mode skipped: {config.model} only generates" for m in local_only]
        modes = [m for m in modes if m not in local_only]
    if EMBED in modes and not any(t.spec.kind == "retrieval" for t in tasks):
        modes.remove(EMBED)
        notes.append("embed mode skipped: it ranks code search (retrieval) tasks only, and none was given")
    free_text = [t.label for t in tasks if t.template.generates]
    if SCORE in modes and free_text:
        notes.append(
            f"score mode leaves out {', '.join(free_text)}: a generation task's reply is free text, "
            "scored in generate mode only"
        )
        if len(free_text) == len(tasks):
            modes.remove(SCORE)
    return modes, notes


def _mode_tasks(mode: str, tasks: list[PromptTaskData]) -> list[PromptTaskData]:
    if mode == EMBED:
        return [t for t in tasks if t.spec.kind == "retrieval"]
    if mode == SCORE:  # log-likelihoods of answer words: a free-text reply has none
        return [t for t in tasks if not t.template.generates]
    return tasks


# ---- the run -------------------------------------------------------------------------------------
def run_prompting(
    config: PromptConfig,
    *,
    backend: PromptBackend | None = None,
    progress: bool = True,
    fresh: bool = False,
    source: str | Path | None = None,
) -> list[ModeRun]:
    """Every answer mode of the config as its own run; the backend is made only if something is asked."""
    tasks = load_tasks(config, source=source)
    scoring = isinstance(backend, ScoringBackend) if backend is not None else not config.is_openai
    modes, notes = usable_modes(config, tasks, scoring)
    workspace = Path(config.workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    store = RunStore(layout.store_path(workspace))
    handle = _BackendHandle(config, backend)
    runs = [
        _run_mode(config, mode, _mode_tasks(mode, tasks), handle, store, progress, fresh) for mode in modes
    ]
    for run in runs[:1]:
        run.notes = notes + run.notes
    return runs


class _BackendHandle:
    """The backend, made on first use: a rerun of finished runs loads no model."""

    def __init__(self, config: PromptConfig, backend: PromptBackend | None) -> None:
        self.config, self._backend = config, backend

    def get(self) -> PromptBackend:
        if self._backend is None:
            from mtpeft.prompting.backends import make_backend

            self._backend = make_backend(self.config)
        return self._backend


def run_dir_for(config: PromptConfig, mode: str) -> Path:
    from mtpeft.paths import inside, safe_filename

    runs = Path(config.workspace) / layout.RUNS_DIR
    key = config_hash(config.defining(mode))[:10]
    return inside(runs, runs / f"{safe_filename(config.run_name(mode))}-{key}")


@dataclass
class _Job:
    """What every step of one run needs: its config, answer mode, backend, answer log, progress bars."""

    config: PromptConfig
    mode: str
    backend: PromptBackend
    log: AnswerLog
    progress: bool


def _run_mode(
    config: PromptConfig,
    mode: str,
    tasks: list[PromptTaskData],
    handle: _BackendHandle,
    store: RunStore,
    progress: bool,
    fresh: bool,
) -> ModeRun:
    from mtpeft.training.run_lock import run_lock

    run_dir = run_dir_for(config, mode)
    with run_lock(run_dir, config.run_name(mode)):
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        previous = _previous(run_dir, store)
        if previous is not None and previous.status == "finished" and not _unanswered(previous):
            return _from_record(previous, mode, run_dir)
        backend = handle.get()  # a model that cannot load stops here, before any store row is written
        run_id = _open_run(config, mode, run_dir, store, previous, [t.label for t in tasks])
        job = _Job(config, mode, backend, AnswerLog(run_dir / ANSWERS_FILE), progress)
        try:
            return _ask_and_record(job, tasks, store, run_id, run_dir)
        except KeyboardInterrupt:
            store.interrupt_run(run_id, "stopped by the user (KeyboardInterrupt); rerun to continue")
            raise
        except Exception as err:
            store.fail_run(run_id, f"{type(err).__name__}: {err}")
            raise


def _previous(run_dir: Path, store: RunStore) -> RunRecord | None:
    """The store's record of the run in this directory, if there is one."""
    run_file = run_dir / layout.RUN_FILE
    if not run_file.is_file():
        return None
    try:
        return store.get(json.loads(run_file.read_text(encoding="utf-8"))["run_id"])
    except RunNotFound:  # the store was replaced: the run starts a new row, its answers so far are kept
        return None


def _open_run(
    config: PromptConfig,
    mode: str,
    run_dir: Path,
    store: RunStore,
    previous: RunRecord | None,
    labels: list[str],
) -> str:
    """The run's id: the previous run resumed, or a new one started."""
    if previous is not None:
        store.resume_run(previous.run_id)
        return previous.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return _start(config, mode, run_dir, store, labels)


def _start(config: PromptConfig, mode: str, run_dir: Path, store: RunStore, labels: list[str]) -> str:
    defining = config.defining(mode)
    run_id = store.start_run(
        name=config.run_name(mode),
        study=config.study,
        group_id=None,
        mode=PROMPTING,
        model=config.model_label,
        method=f"prompt-{mode}" if mode == EMBED else f"prompt-{mode}-{config.shots}shot",
        tasks=labels,
        seed=config.seed,
        config=defining | {"key": config_hash(defining)},
        run_dir=str(run_dir),
    )
    (run_dir / layout.RUN_FILE).write_text(json.dumps({"run_id": run_id, "mode": mode}), encoding="utf-8")
    dump = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    (run_dir / layout.CONFIG_FILE).write_text(dump, encoding="utf-8")
    return run_id


def _unanswered(record: RunRecord) -> int:
    """Failed answers of a finished run: a rerun retries them instead of showing the run as done."""
    return sum(int(t.get("unanswered", 0)) for t in record.details.get("tasks", {}).values())


def _from_record(record: RunRecord, mode: str, run_dir: Path) -> ModeRun:
    results = record.details.get("tasks", {})
    return ModeRun(
        record.run_id, run_dir, record.name, mode, results, record.baselines, record.cost, reused=True
    )


def _ask_and_record(
    job: _Job, tasks: list[PromptTaskData], store: RunStore, run_id: str, run_dir: Path
) -> ModeRun:
    config, started = job.config, time.perf_counter()
    results = {task.label: _run_task(job, task) for task in tasks}
    baselines = {t.label: _baselines(config, t) for t in tasks}
    details = _details(job, results)
    cost = _run_cost(results, time.perf_counter() - started)
    _write_files(run_dir, config.split, results, details)
    metrics = {config.split: {label: r.metrics for label, r in results.items()}}
    store.finish_run(run_id, metrics=metrics, cost=cost, baselines=baselines, details=details)
    return ModeRun(run_id, run_dir, config.run_name(job.mode), job.mode, details["tasks"], baselines, cost)


# ---- one task ------------------------------------------------------------------------------------
def _run_task(job: _Job, task: PromptTaskData) -> TaskResult:
    if job.mode == EMBED:
        return _embed_task(job, task)
    shots = _shot_source(job.config, task)
    if task.spec.kind == "retrieval":
        return _rerank_task(job, task, shots)
    conversations = [task.template.conversation(e, shots(e)) for e in task.test]
    requests = [_request(job, task, str(i), c) for i, c in enumerate(conversations)]
    records = _answers(job, task, requests)
    if task.template.generates:
        references = [e.target or "" for e in task.test]
        return score_texts(task.label, task.spec.metrics, records, references)
    gold = [int(e.label or 0) for e in task.test]
    words = task.template.words
    return score_labels(task.label, task.spec.metrics, records, gold, mode=job.mode, words=words)


Shots = Callable[[Example], list[Example]]


def _shot_source(config: PromptConfig, task: PromptTaskData) -> Shots:
    if config.shots == 0 or not task.train:
        return lambda _: []
    from mtpeft.prompting.fewshot import ShotPicker

    picker = ShotPicker(task.train, task.spec.kind)
    return lambda example: picker.pick(example, config.shots)


def _rerank_task(job: _Job, task: PromptTaskData, shots: Shots) -> TaskResult:
    from mtpeft.prompting.retrieval import POOL_PROTOCOL, pool_items, pools

    requests: list[Request] = []
    sizes = []
    for i, pool in enumerate(pools(task.test, job.config.pool_size)):
        examples = shots(task.test[i])  # the query's shots, the same for each of its candidates
        items = pool_items(task.test, pool, i)
        sizes.append(len(items))
        for position, item in enumerate(items):
            conversation = task.template.conversation(item, examples)
            requests.append(_request(job, task, f"{i}/{position}", conversation))
    records = _answers(job, task, requests)
    grouped, start = [], 0
    for size in sizes:
        grouped.append(records[start : start + size])
        start += size
    result = score_pools(task.label, task.spec.metrics, grouped, mode=job.mode)
    largest = max(sizes, default=0)
    result.protocol = POOL_PROTOCOL.format(n=largest, others=largest - 1)
    return result


def _embed_task(job: _Job, task: PromptTaskData) -> TaskResult:
    """The cheap code-search variant; not logged (one pass over the split), so a resume redoes it."""
    import numpy as np

    from mtpeft.prompting.retrieval import EMBED_PROTOCOL, cosine_ranks

    backend, texts = job.backend, [e.query or "" for e in task.test] + [e.code for e in task.test]
    started = time.perf_counter()
    vectors = np.asarray(backend.embed(texts))
    seconds = time.perf_counter() - started
    ranks = cosine_ranks(vectors[: len(task.test)], vectors[len(task.test) :])
    limit = job.config.embed_max_tokens
    tokens = sum(min(backend.count_tokens([{"role": "user", "content": t}]), limit) for t in texts)
    counts = Counts(examples=len(task.test), prompts=len(texts))
    cost = {"tokens_in": float(tokens), "tokens_out": 0.0, "seconds": seconds}
    result = score_ranks(task.label, task.spec.metrics, ranks, counts, cost)
    result.protocol = EMBED_PROTOCOL
    return result


def _request(job: _Job, task: PromptTaskData, key: str, conversation: Conversation) -> Request:
    reserve = _new_tokens(job.config, task) if job.mode == GENERATE else SCORE_RESERVE
    budget = job.backend.context_length - reserve
    prompt, truncated, tokens = fit(conversation, job.backend.count_tokens, budget)
    extra = f"generate:{reserve}" if job.mode == GENERATE else f"score:{_choices(task)}"
    return Request(key, prompt, truncated, tokens, prompt_hash(prompt, extra))


def _new_tokens(config: PromptConfig, task: PromptTaskData) -> int:
    """Tokens a reply may have: an answer word's few, or a whole summary or fixed method."""
    return config.max_target_tokens if task.template.generates else config.max_new_tokens


def _choices(task: PromptTaskData) -> list[str]:
    return score_choices(task.template.words)[0]


# ---- asking ------------------------------------------------------------------------------------
def _answers(job: _Job, task: PromptTaskData, requests: list[Request]) -> list[AnswerRecord]:
    """Every request's answer, in request order: from the log where answered, else asked (and logged)."""
    known = job.log.load()
    ready = {
        r.key: known[(task.label, r.key)] for r in requests if _reusable(known.get((task.label, r.key)), r)
    }
    todo = [r for r in requests if r.key not in ready]
    # Answers are saved after each chunk: a kill loses one chunk at most.
    size = max(job.config.batch_size, job.config.concurrency or 1) * 4
    with tqdm(
        total=len(todo), desc=f"{job.mode} {task.label}", unit="prompt", disable=not job.progress
    ) as bar:
        for chunk in _chunks(todo, size):
            records = _ask(job, task, chunk)
            job.log.append(records)
            ready.update((r.key, r) for r in records)
            bar.update(len(chunk))
    answers = [ready[r.key] for r in requests]
    _refuse_all_failed(task.label, answers)
    return answers


def _reusable(record: AnswerRecord | None, request: Request) -> bool:
    return record is not None and record.answered and record.sha == request.sha


def _chunks(items: list[Request], size: int) -> Iterator[list[Request]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ask(job: _Job, task: PromptTaskData, chunk: list[Request]) -> list[AnswerRecord]:
    prompts, backend = [r.prompt for r in chunk], job.backend
    started = time.perf_counter()
    try:
        if job.mode == GENERATE:
            answers = backend.generate(prompts, max_new_tokens=_new_tokens(job.config, task))
            _check_count(backend, answers, chunk)
            return [_from_answer(task.label, r, a) for r, a in zip(chunk, answers, strict=True)]
        scores = backend.score(prompts, _choices(task))  # type: ignore[attr-defined]
        _check_count(backend, scores, chunk)
    except MtpeftError:
        raise
    except Exception as err:  # noqa: BLE001 - a failed batch is recorded as failed answers, never dropped
        return [_failed(task.label, r, f"{type(err).__name__}: {err}") for r in chunk]
    share = (time.perf_counter() - started) / len(chunk)
    return [
        AnswerRecord(
            task.label, r.key, r.sha, scores=[float(x) for x in s], tokens_in=r.tokens, seconds=share,
            truncated=r.truncated,
        )
        for r, s in zip(chunk, scores, strict=True)
    ]  # fmt: skip


def _check_count(backend: PromptBackend, answers: list, chunk: list[Request]) -> None:
    if len(answers) != len(chunk):
        raise MtpeftError(
            f"backend {backend.name} returned {len(answers)} answers for {len(chunk)} prompts (a bug in it)"
        )


def _from_answer(task: str, request: Request, answer: Answer) -> AnswerRecord:
    return AnswerRecord(
        task, request.key, request.sha, text=answer.text, tokens_in=answer.tokens_in or request.tokens,
        tokens_out=answer.tokens_out, seconds=answer.seconds, truncated=request.truncated or answer.truncated,
        error=answer.error if answer.error is not None or answer.text is not None else "no text and no error",
    )  # fmt: skip


def _failed(task: str, request: Request, error: str) -> AnswerRecord:
    return AnswerRecord(
        task, request.key, request.sha, tokens_in=request.tokens, truncated=request.truncated, error=error
    )


def _refuse_all_failed(task: str, answers: list[AnswerRecord]) -> None:
    """Every request failed: nothing to score, and almost surely a setup problem (server down, bad model)."""
    if answers and not any(a.answered for a in answers):
        raise MtpeftError(
            f"task '{task}': all {len(answers)} requests failed (first error: {answers[0].error}); fix the "
            "cause and run the same command again: nothing answered is lost"
        )


# ---- recording -------------------------------------------------------------------------------------
def _baselines(config: PromptConfig, task: PromptTaskData) -> dict[str, dict[str, float]]:
    """Majority and TF-IDF (trained on train) on the same examples, for the report's columns; for a
    generation task also the copy-the-input baseline."""
    if not config.baselines or not task.train:
        return {}
    from mtpeft.evaluation.baselines import score_baseline
    from mtpeft.tasks.kinds import kind_of

    names = [n for n in ("majority", "tfidf", "copy") if n in kind_of(task.spec).baselines()]
    return {n: score_baseline(task.spec, n, task.train, task.test, seed=config.seed) for n in names}


def per_thousand(cost: dict[str, float], examples: int) -> dict[str, float]:
    return {k: v * 1000.0 / examples for k, v in cost.items()} if examples else {}


def _details(job: _Job, results: dict[str, TaskResult]) -> dict[str, Any]:
    tasks = {
        label: {
            "metrics": r.metrics,
            "intervals": {m: list(ci) for m, ci in r.intervals.items()},
            **asdict(r.counts),
            "cost": r.cost,
            "cost_per_1000": per_thousand(r.cost, r.counts.examples),
            "protocol": r.protocol,
        }
        for label, r in results.items()
    }
    config, mode = job.config, job.mode
    return {
        "kind": PROMPTING, "mode": mode, "shots": None if mode == EMBED else config.shots,
        "backend": job.backend.name, "context_length": job.backend.context_length, "split": config.split,
        "limit": config.limit, "seed": config.seed, "tasks": tasks,
    }  # fmt: skip


def _run_cost(results: dict[str, TaskResult], wall_s: float) -> dict[str, Any]:
    totals = {
        k: sum(r.cost.get(k, 0.0) for r in results.values()) for k in ("tokens_in", "tokens_out", "seconds")
    }
    examples = sum(r.counts.examples for r in results.values())
    return totals | {
        "wall_time_s": wall_s,
        "examples": examples,
        "per_1000_examples": per_thousand(totals, examples),
    }


def _write_files(run_dir: Path, split: str, results: dict[str, TaskResult], details: dict) -> None:
    """Per-example predictions where the report reads every run's (layout.per_example_path), and results."""
    for label, result in results.items():
        path = layout.per_example_path(run_dir, split, label)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.per_example), encoding="utf-8")
    (run_dir / RESULTS_FILE).write_text(json.dumps(details, indent=2), encoding="utf-8")
