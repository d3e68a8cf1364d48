"""`mtpeft evaluate RUN_DIR --data TASK=PATH`: a trained run scored on any dataset its task's format reads.

The folder needs only the split that is scored, so a cross-project or cross-language test set with no
train split will do. Each evaluation gives:

- the task's metrics on the whole split (or on a seeded subset of `max_examples`), and a 95% percentile
  bootstrap interval of the primary metric over the examples (`bootstrap_ci`, the report's bootstrap);
- two baselines on the same examples: `majority`, the most frequent label OF THE EVALUATED SPLIT ITSELF
  (it looks at the answers: a reference for how imbalanced that data is, not a rival model), and `tfidf`,
  trained on the run's own train data (skipped, with a note saying why, when that data can no longer be
  read: the scores are kept, not lost to a missing baseline);
- for a classification task, its `details` (mtpeft.evaluation.other_data): ECE and NLL before and after
  the run's temperature on that data; for binary and pair tasks the threshold chosen on the run's
  validation split for a target precision (`precision`, default 0.9) and the precision and recall it
  reaches on that data; the OOD scores' AUROC separating that data from the run's own test split;
- the official prediction files in `predictions/<task>@<data folder>-<hash>/<split>/` (layout.
  evaluation_dir), never in the run's own `predictions/<split>/`, with `evaluation.json` beside them
  (and, for a classification task, `<task>.probabilities.jsonl`: each example's logits and probabilities);
- a row in the store's `evaluations` table, which `mtpeft evaluations` and `mtpeft report` read.

Every request is checked first (the task is one of the run's, the folder exists and its split reads), so a
bad one stops everything with one located error before the model loads, and nothing is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mtpeft import layout
from mtpeft.config import TrainConfig
from mtpeft.data.example import Example
from mtpeft.data.formats.base import load_split
from mtpeft.errors import ConfigError, DataError, MtpeftError
from mtpeft.evaluation import other_data
from mtpeft.evaluation.other_data import DEFAULT_PRECISION
from mtpeft.modeling.task_data import RunTask, subsample
from mtpeft.outputs import write_text
from mtpeft.paths import task_file
from mtpeft.store import EvaluationRecord, RunNotFound, RunStore
from mtpeft.store.sqlite import TFIDF_SKIPPED
from mtpeft.tasks.spec import TaskSpec

if TYPE_CHECKING:
    import torch

    from mtpeft.modeling.build import TrainedRun
    from mtpeft.modeling.distributed import Shard

ALL = "all"
MAJORITY, TFIDF = "majority", "tfidf"  # the two baselines an evaluation on other data reports
BOOTSTRAP_RESAMPLES = 1000  # as study/stats.py: one interval recipe across the project
# (task, its scored examples, the model's outputs on them, the evaluation's folder) -> the evaluation's
# details: calibration, precision and OOD on that data (mtpeft.evaluation.other_data)
Checks = Callable[[RunTask, list[Example], dict, Path], dict]


@dataclass(frozen=True)
class DataRequest:
    task: str  # one of the run's task names
    path: Path  # absolute data folder
    split: str = "test"
    max_examples: int | None = None  # None: the whole split


@dataclass(frozen=True)
class RunInfo:
    """What evaluating needs from a run directory, read without loading the model."""

    run_dir: Path
    run_id: str | None  # None: no run.json (a run directory not made by `mtpeft train`)
    config: TrainConfig
    tasks: dict[str, RunTask]


@dataclass(frozen=True)
class Prepared:
    request: DataRequest
    task: RunTask
    examples: list[Example]


@dataclass
class Outcome:
    evaluations: list[EvaluationRecord]
    store: Path | None  # where they were recorded; None when they were not
    note: str | None = None  # why they were not recorded


# ---- command-line values -------------------------------------------------------------------------
def parse_data_option(text: str) -> tuple[str, Path]:
    """`TASK=PATH` -> (task, absolute path): the store keys evaluations on the absolute path."""
    task, sep, path = text.partition("=")
    if not sep or not task.strip() or not path.strip():
        raise MtpeftError(f"--data '{text}': give TASK=PATH, e.g. --data vulnerability=data/cross-project")
    return task.strip(), Path(path.strip()).expanduser().resolve()


def parse_max_examples(text: str) -> int | None:
    """'all' -> None (the whole split); a positive whole number -> a seeded subset of that size."""
    if text.strip().lower() == ALL:
        return None
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise MtpeftError(f"--max-examples '{text}': give 'all' or a positive whole number")
    return value


# ---- checks, before anything heavy ---------------------------------------------------------------
def open_run(run_dir: Path) -> RunInfo:
    from mtpeft.modeling.build import read_heads_meta

    if not run_dir.is_dir():
        raise ConfigError("run directory does not exist (give a folder under WORKSPACE/runs/)", path=run_dir)
    meta = read_heads_meta(run_dir / layout.BEST_DIR)
    config = layout.load_run_config(run_dir)
    saved = list(meta["tasks"].items())  # in config order: the heads were built from config.tasks
    if len(saved) != len(config.tasks):
        raise ConfigError(
            f"{layout.CONFIG_FILE} lists {len(config.tasks)} tasks but the saved heads are for "
            f"{len(saved)}; the run directory is inconsistent: retrain it",
            path=run_dir,
        )
    tasks = {
        name: RunTask(name=name, spec=TaskSpec.model_validate(spec), entry=entry)
        for (name, spec), entry in zip(saved, config.tasks, strict=True)
    }
    run_file = layout.read_run_file(run_dir)
    run_id = run_file["run_id"] if run_file is not None else None
    return RunInfo(run_dir, run_id, config, tasks)


def own_data_requests(run: RunInfo, split: str, max_examples: int | None) -> list[DataRequest]:
    """Each task of the run on its own data folder (e.g. the whole test split, not the run's subset)."""
    requests = []
    for name, task in run.tasks.items():
        folder = task.entry.data or task.spec.data
        if folder is None:  # training refuses such a config, so only a hand-edited one gets here
            raise ConfigError(f"task '{name}' names no data folder", path=run.run_dir / layout.CONFIG_FILE)
        requests.append(DataRequest(name, Path(folder).resolve(), split, max_examples))
    return requests


def prepare(run: RunInfo, request: DataRequest) -> Prepared:
    """The examples a request scores, or one error naming the task, folder, file, line or field."""
    task = run.tasks.get(request.task)
    if task is None:
        raise ConfigError(
            f"the run has no task '{request.task}'; its tasks are: {', '.join(run.tasks)} "
            "(--data TASK=PATH takes one of them)",
            path=run.run_dir,
        )
    path = request.path
    if not path.exists():
        hint = f"check PATH in --data {task.name}=PATH"
        raise DataError("data folder does not exist", path=path, hint=hint)
    if not path.is_dir():
        raise DataError(
            "is a file; --data takes the folder that holds the split's files",
            path=path,
            hint=f"e.g. --data {task.name}={path.parent}",
        )
    examples = load_split(task.spec, path, request.split)  # DataError: missing split, bad file/line/field
    return Prepared(request, task, subsample(examples, request.max_examples, seed=run.config.seed))


# ---- scoring ---------------------------------------------------------------------------------------
def evaluate_on_data(
    run_dir: Path,
    requests: list[DataRequest],
    *,
    baselines: bool = True,
    progress: bool = False,
    run: RunInfo | None = None,
    shard: Shard | None = None,
    precision: float = DEFAULT_PRECISION,
) -> Outcome | None:
    """Score each request, write its prediction files, record it in the run's store.

    `precision`: the target whose validation threshold is applied to the data (binary and pair tasks).
    `shard`: with several processes (torchrun) all call it together and each predicts its share; only
    the main one writes, records and returns the outcome (the others get None)."""
    from mtpeft.calibration_file import check_target
    from mtpeft.evaluation.run_eval import process_device
    from mtpeft.modeling.build import load_trained
    from mtpeft.modeling.distributed import Shard

    check_target(precision)
    shard = shard or Shard()
    run = run or open_run(run_dir)
    prepared = [prepare(run, request) for request in requests]
    device = process_device()
    trained = load_trained(run_dir, device)
    checks = _other_data_checks(trained, run_dir, precision)
    evaluations = [
        _score(run, item, trained, device, checks, baselines=baselines, progress=progress, shard=shard)
        for item in prepared
    ]
    if shard.rank != 0:
        return None
    return record_evaluations(run, [e for e in evaluations if e is not None])


def _other_data_checks(trained: TrainedRun, run_dir: Path, precision: float) -> Checks:
    """Calibration, precision and OOD on the data (mtpeft.evaluation.other_data), through the Python API's
    view of the loaded model, so that the OOD vectors are exactly those `analyze` scores."""
    from mtpeft.api import Run

    api = Run(trained, run_dir)
    own = other_data.OwnVectors(api)

    def checks(task: RunTask, examples: list[Example], outputs: dict, out_dir: Path) -> dict:
        if "logits" in outputs:
            other_data.write_probabilities(api, task, examples, outputs["logits"], out_dir)
        return other_data.details(api, task, examples, outputs, target=precision, own=own)

    return checks


def _score(
    run: RunInfo,
    item: Prepared,
    trained: TrainedRun,
    device: torch.device,
    checks: Checks,
    *,
    baselines: bool,
    progress: bool,
    shard: Shard,
) -> EvaluationRecord | None:
    from mtpeft.evaluation.metrics import bootstrap_ci
    from mtpeft.evaluation.predictions import write_predictions
    from mtpeft.evaluation.run_eval import score_task
    from mtpeft.modeling.inputs import tokenize_task

    task, request = item.task, item.request
    tokenizer, lm_head = trained.backbone.tokenizer, trained.backbone.info.lm_head
    features = tokenize_task(task.spec, task.entry, item.examples, tokenizer, lm_head=lm_head)
    shown = progress and shard.rank == 0
    result = score_task(trained.model, trained.backbone, task.name, task, features, device, shown, shard)
    if shard.rank != 0:
        return None
    metric = task.spec.primary
    interval = bootstrap_ci([metric], result.per_example, n=BOOTSTRAP_RESAMPLES)[metric]
    out_dir = layout.evaluation_dir(run.run_dir, task.name, request.path, request.split).resolve()
    write_predictions(task.spec, features.examples, result.outputs, out_dir)
    write_text(task_file(out_dir, task.spec.name, "per_example.json"), json.dumps(result.per_example))
    details = checks(task, features.examples, result.outputs, out_dir)
    scores, notes = data_baselines(run, task, features.examples) if baselines else ({}, [])
    record = EvaluationRecord(
        run_id=run.run_id or "",
        task=task.name,
        data_path=str(request.path),
        split=request.split,
        n_examples=len(features.examples),
        max_examples=request.max_examples,
        metric=metric,
        score=result.metrics[metric],
        interval=interval,
        metrics=result.metrics,
        baselines=scores,
        notes=notes,
        predictions_dir=str(out_dir),
        details=details,
    )
    _write_evaluation_file(record)
    return record


def _write_evaluation_file(record: EvaluationRecord) -> None:
    """evaluation.json beside the prediction files: the evaluation as the store holds it."""
    path = Path(record.predictions_dir) / layout.EVALUATION_FILE
    write_text(path, json.dumps(asdict(record), indent=2))


def data_baselines(
    run: RunInfo, task: RunTask, examples: list[Example]
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Majority of the evaluated data itself, TF-IDF trained on the run's train data; notes on skips."""
    from mtpeft.evaluation.baselines import score_baseline
    from mtpeft.tasks.kinds import kind_of

    available = kind_of(task.spec).baselines()
    seed = run.config.seed
    scores: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    if MAJORITY in available:  # fitted on the evaluated examples: their own most frequent label
        scores[MAJORITY] = score_baseline(task.spec, MAJORITY, examples, examples, seed=seed)
    if TFIDF in available:
        try:
            train = task.examples("train", seed=seed)
        except (MtpeftError, OSError) as err:
            notes.append(f"{TFIDF_SKIPPED}: the run's train data can no longer be read ({err})")
        else:
            scores[TFIDF] = score_baseline(task.spec, TFIDF, train, examples, seed=seed)
    return scores, notes


# ---- recording -------------------------------------------------------------------------------------
def record_evaluations(run: RunInfo, evaluations: list[EvaluationRecord]) -> Outcome:
    """Into the store of the workspace the run directory sits in (WORKSPACE/runs/<run>)."""
    store_file = layout.store_path(run.run_dir.resolve().parent.parent)
    if run.run_id is None:
        note = f"not recorded in a store: {run.run_dir} has no {layout.RUN_FILE} naming its run"
        return Outcome(evaluations, None, note)
    if not store_file.is_file():
        note = f"not recorded in a store: no {layout.STORE_FILE} in {store_file.parent}, the run's workspace"
        return Outcome(evaluations, None, note)
    store = RunStore(store_file)
    try:
        stored = [store.record_evaluation(e) for e in evaluations]
    except RunNotFound:
        return Outcome(evaluations, None, f"not recorded: {store_file} has no run {run.run_id}")
    for record in stored:  # now with the store's id and time
        _write_evaluation_file(record)
    return Outcome(stored, store_file)
