"""The results store: every run, its config and hash, status, metrics, cost and versions in SQLite.

One file per workspace (stdlib sqlite3, WAL, so a report can read while runs write). A run's final write
is one transaction, so a killed process leaves a run "running" (shown as "interrupted" once its process
is gone), never a half-written run that looks finished.

Tables: `runs` (one row per run; JSON columns for config, cost, baselines, data quality, versions and
kind-specific details; mode "prompting" marks a prompted LLM, not a fine-tuned run, and "merged" a run
merged from trained runs by `mtpeft merge`),
`metrics(run_id, split, task, metric, value)` (normalised, what reports query), `evaluations` (a run
scored on other data: `mtpeft evaluate RUN --data TASK=PATH`) and `schema_version`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from mtpeft.disk import disk_full, is_disk_full
from mtpeft.errors import DamagedStore, MtpeftError, NonFiniteMetric

# Schema migrations, applied in order to bring any older store up to date (a registry, not an if-chain).
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, name TEXT NOT NULL, study TEXT, group_id TEXT, mode TEXT NOT NULL,
        model TEXT NOT NULL, method TEXT NOT NULL, tasks TEXT NOT NULL, seed INTEGER NOT NULL,
        config TEXT NOT NULL, config_hash TEXT NOT NULL, status TEXT NOT NULL,
        baselines TEXT NOT NULL DEFAULT '{}', cost TEXT NOT NULL DEFAULT '{}',
        data_quality TEXT NOT NULL DEFAULT '{}', versions TEXT NOT NULL DEFAULT '{}',
        run_dir TEXT NOT NULL, error TEXT, pid INTEGER, host TEXT,
        created_at TEXT NOT NULL, finished_at TEXT
    );
    CREATE INDEX runs_hash ON runs (config_hash, status);
    CREATE TABLE metrics (
        run_id TEXT NOT NULL REFERENCES runs(run_id), split TEXT NOT NULL, task TEXT NOT NULL,
        metric TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (run_id, split, task, metric)
    );
    """,
    # The process start time tells a live run from a dead one whose pid was reused by another process.
    2: "ALTER TABLE runs ADD COLUMN pid_started REAL; CREATE INDEX runs_study ON runs (study);",
    # A run scored later on other data (`mtpeft evaluate RUN --data TASK=PATH`): one row per run, task,
    # data folder and split (evaluating again replaces it, as it replaces the prediction files).
    3: """
    CREATE TABLE evaluations (
        eval_id TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id), task TEXT NOT NULL,
        data_path TEXT NOT NULL, split TEXT NOT NULL, n_examples INTEGER NOT NULL, max_examples INTEGER,
        metric TEXT NOT NULL, score REAL NOT NULL, ci_low REAL, ci_high REAL,
        metrics TEXT NOT NULL, baselines TEXT NOT NULL DEFAULT '{}', notes TEXT NOT NULL DEFAULT '[]',
        predictions_dir TEXT NOT NULL, created_at TEXT NOT NULL,
        UNIQUE (run_id, task, data_path, split)
    );
    CREATE INDEX evaluations_run ON evaluations (run_id);
    """,
    # What a run's kind records beyond its metrics, e.g. a prompting run's shots, answer mode, 95%
    # intervals and unparseable / truncated / unanswered counts per task (prompting/runner.py).
    4: "ALTER TABLE runs ADD COLUMN details TEXT NOT NULL DEFAULT '{}'",
}
SCHEMA_VERSION = max(MIGRATIONS)
STATUSES = ("running", "finished", "failed", "interrupted")
PROMPTING = "prompting"  # runs.mode of a general LLM prompted directly (`mtpeft prompt`), not fine-tuned
MERGED = "merged"  # runs.mode of a run merged from trained runs (`mtpeft merge`), not trained itself
_PID_TIME_TOLERANCE_S = 1.0
LOCK_TIMEOUT_S = 30.0
PAUSE_MESSAGE = "mtpeft store: pausing inside finish_run for"


class RunNotFound(MtpeftError, KeyError):
    """No run with that id in the store (a KeyError too, for dict-like callers)."""

    __str__ = MtpeftError.__str__  # KeyError would print the message quoted


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace): equal configs hash equal."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "accelerate", "mtpeft"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _this_process() -> tuple[int, float, str]:
    pid = os.getpid()
    return pid, psutil.Process(pid).create_time(), platform.node()


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL (persistent). Hand-written retry: while other processes create the same
    fresh file, this PRAGMA fails with "database is locked" at once instead of waiting on the timeout."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _alive(pid: int | None, started: float | None) -> bool:
    """Whether the process that wrote the run still runs (same pid and, where known, same start time)."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < _PID_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False


@dataclass
class RunRecord:
    run_id: str
    name: str
    study: str | None
    group_id: str | None  # single-mode runs of one training command share it
    mode: str  # "single" | "multi" | "merged" (mtpeft merge) | "prompting" (mtpeft prompt)
    model: str
    method: str
    tasks: list[str]
    seed: int
    config: dict
    config_hash: str
    status: str  # "running" | "finished" | "failed" | "interrupted"
    metrics: dict  # {split: {task: {metric: value}}}
    baselines: dict  # {task: {baseline: {metric: value}}}
    cost: dict
    data_quality: dict  # {task: inspect summary}
    versions: dict
    run_dir: str
    error: str | None
    created_at: str
    finished_at: str | None
    details: dict = field(default_factory=dict)  # kind-specific results (prompting: counts, intervals)


# The start of an evaluation's note when its TF-IDF baseline could not be fitted (reports show "skipped").
TFIDF_SKIPPED = "TF-IDF baseline skipped"


@dataclass
class EvaluationRecord:
    """One trained run scored on one split of one data folder (not necessarily the data it trained on)."""

    run_id: str
    task: str
    data_path: str  # absolute
    split: str
    n_examples: int
    max_examples: int | None  # None: the whole split was scored
    metric: str  # the task's primary metric
    score: float
    interval: tuple[float, float] | None  # 95% bootstrap interval of `score` over the examples
    metrics: dict  # {metric: value}
    baselines: dict  # {baseline: {metric: value}}: majority of this data, TF-IDF trained on the run's train
    notes: list[str]  # e.g. a baseline that was skipped, and why
    predictions_dir: str
    eval_id: str = ""
    created_at: str = ""
    # Classification tasks: calibration, precision at the validation threshold and OOD separation on this
    # data (mtpeft.evaluation.other_data); empty for other tasks and for evaluations recorded before them.
    details: dict = field(default_factory=dict)


# Where an evaluation's `details` live in the store: under this key of its `baselines` JSON column, so that
# no schema migration is needed (stores of every version hold them) and an older mtpeft, which reads
# baselines by name only, reads the row as before. Taken out again on reading: never seen as a baseline.
DETAILS_KEY = "_details"


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise self._damaged("it is not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            _enable_wal(db)
            self._migrate(db)
            # Damage SQLite only meets on the page it reads (a truncated file opens): found here, once,
            # not by the finish_run at the end of hours of training. Milliseconds on a store of runs.
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise self._damaged(problem)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose block is one transaction: committed on success, rolled back on error.

        SQLite's own errors become one message: a damaged file, a full disk or a lock held too long."""
        try:
            db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S)  # waits for other processes' writes
        except sqlite3.Error as err:
            raise self._store_error(err) from err
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        except sqlite3.Error as err:
            raise self._store_error(err) from err
        finally:
            db.close()

    def _store_error(self, err: sqlite3.Error) -> MtpeftError:
        if is_disk_full(err):
            return disk_full("the results store", self.path.parent, needed=None, then="run the command again")
        if "locked" in str(err) or "busy" in str(err):
            return MtpeftError(
                f"{self.path}: the results store stayed locked by another process for {LOCK_TIMEOUT_S:g} s "
                "(a study or report writing to it?); try again when it is done"
            )
        if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            return self._damaged(str(err))
        if "unable to open" in str(err) or "readonly" in str(err):
            return MtpeftError(
                f"{self.path}: the results store cannot be opened or written ({err}); "
                "check the folder's permissions, or choose another --workspace"
            )
        return self._damaged(str(err))

    def _damaged(self, problem: str) -> DamagedStore:
        return DamagedStore(
            f"{self.path} is not a readable mtpeft results store (sqlite: {problem}). Move it aside "
            f"(e.g. mv {self.path} {self.path}.damaged) and run the command again: a new, empty store is "
            f"created, and the runs' directories in {self.path.parent / 'runs'} (their models, configs and "
            "metrics files) are intact"
        )

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # write lock first: processes opening a fresh store at once wait here
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise MtpeftError(
                f"{self.path}: store schema version {current} is newer than this mtpeft's "
                f"({SCHEMA_VERSION}); upgrade mtpeft"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version VALUES (?)", (version,))

    # ---- writes ---------------------------------------------------------------------------------
    def start_run(
        self,
        *,
        name: str,
        study: str | None,
        group_id: str | None,
        mode: str,
        model: str,
        method: str,
        tasks: list[str],
        seed: int,
        config: dict,
        run_dir: str,
    ) -> str:
        """Record a new run as running in this process; returns its id."""
        run_id = uuid.uuid4().hex
        pid, started, host = _this_process()
        row = {
            "run_id": run_id, "name": name, "study": study, "group_id": group_id, "mode": mode,
            "model": model, "method": method, "tasks": json.dumps(tasks), "seed": seed,
            "config": json.dumps(config, default=str), "config_hash": config_hash(config),
            "status": "running", "versions": json.dumps(software_versions()), "run_dir": str(run_dir),
            "pid": pid, "pid_started": started, "host": host, "created_at": _now(),
        }  # fmt: skip
        with self._connect() as db:
            columns, marks = ", ".join(row), ", ".join("?" * len(row))
            db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", tuple(row.values()))
        return run_id

    def resume_run(self, run_id: str) -> None:
        """A resumed run is running again, in this process."""
        pid, started, host = _this_process()
        with self._connect() as db:
            self._update(
                db,
                run_id,
                "status='running', error=NULL, finished_at=NULL, pid=?, pid_started=?, host=?",
                (pid, started, host),
            )

    def finish_run(
        self,
        run_id: str,
        *,
        metrics: dict,
        cost: dict,
        baselines: dict | None = None,
        data_quality: dict | None = None,
        details: dict | None = None,
    ) -> None:
        """Metrics ({split: {task: {metric: value}}}) and the finished status, in ONE transaction.

        Refused (NonFiniteMetric, nothing written) if any metric is inf or NaN: a finished run's numbers
        go into reports and model selection as they are; the caller records the run as failed instead.
        """
        with self._connect() as db:
            self._write_metrics(db, run_id, metrics)
            _test_pause_hook()
            assignments = (
                "status='finished', cost=?, baselines=?, data_quality=?, details=?, finished_at=?, error=NULL"
            )
            values = (
                json.dumps(cost), json.dumps(baselines or {}), json.dumps(data_quality or {}),
                json.dumps(details or {}), _now(),
            )  # fmt: skip
            self._update(db, run_id, assignments, values)

    def update_metrics(self, run_id: str, split: str, metrics: dict) -> None:
        """Merge {task: {metric: value}} into a split (e.g. `mtpeft evaluate` adds a split later)."""
        with self._connect() as db:
            self._require(db, run_id)
            self._write_metrics(db, run_id, {split: metrics})

    def set_metric(self, run_id: str, split: str, task: str, metric: str, value: float) -> None:
        self.update_metrics(run_id, split, {task: {metric: value}})

    def fail_run(self, run_id: str, error: str) -> None:
        with self._connect() as db:
            self._update(db, run_id, "status='failed', error=?, finished_at=?", (error, _now()))

    def interrupt_run(self, run_id: str, reason: str) -> None:
        """Stopped by the user (Ctrl-C): not a failure; `--resume` or the study continues it."""
        with self._connect() as db:
            self._update(db, run_id, "status='interrupted', error=?, finished_at=?", (reason, _now()))

    def _require(self, db: sqlite3.Connection, run_id: str) -> None:
        if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound(f"no run '{run_id}' in {self.path}")

    def _update(self, db: sqlite3.Connection, run_id: str, assignments: str, args: tuple) -> None:
        cursor = db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*args, run_id))
        if cursor.rowcount == 0:
            raise RunNotFound(f"no run '{run_id}' in {self.path}")

    @staticmethod
    def _write_metrics(db: sqlite3.Connection, run_id: str, metrics: dict) -> None:
        rows = [
            (run_id, split, task, metric, float(value))
            for split, by_task in metrics.items()
            for task, by_metric in by_task.items()
            for metric, value in by_metric.items()
        ]
        bad = [
            f"{split}/{task}/{metric} = {value}"
            for _, split, task, metric, value in rows
            if not math.isfinite(value)
        ]
        if bad:
            raise NonFiniteMetric(
                f"run {run_id}: non-finite metrics are not recorded ({', '.join(bad)}); the model "
                "behind them diverged or a metric is broken: see the run's train.log"
            )
        db.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?)", rows)

    # ---- reads ----------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        records = self._select("WHERE run_id = ?", (run_id,))
        if not records:
            raise RunNotFound(f"no run '{run_id}' in {self.path}")
        return records[0]

    def list_runs(self, *, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs in creation order; `status` filters on the status as shown (interrupted included)."""
        if status is not None and status not in STATUSES:
            raise MtpeftError(f"unknown run status '{status}'; known: {', '.join(STATUSES)}")
        records = self._select("WHERE study = ?", (study,)) if study is not None else self._select("", ())
        return [r for r in records if status is None or r.status == status]

    def find_finished(self, config_hash: str) -> RunRecord | None:
        """The latest finished run with this config hash (studies skip what is already done)."""
        records = self._select("WHERE config_hash = ? AND status = 'finished'", (config_hash,))
        return records[-1] if records else None

    def _select(self, where: str, args: tuple) -> list[RunRecord]:
        with self._connect() as db:
            db.execute("BEGIN")  # one snapshot for both reads: never a finished run without its metrics
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY created_at, rowid", args).fetchall()
            metric_rows = db.execute(
                f"SELECT * FROM metrics WHERE run_id IN (SELECT run_id FROM runs {where})", args
            ).fetchall()
        metrics: dict[str, dict] = {}
        for m in metric_rows:
            by_task = metrics.setdefault(m["run_id"], {}).setdefault(m["split"], {})
            by_task.setdefault(m["task"], {})[m["metric"]] = m["value"]
        return [_record(row, metrics.get(row["run_id"], {})) for row in rows]

    # ---- evaluations on other data --------------------------------------------------------------
    def record_evaluation(self, evaluation: EvaluationRecord) -> EvaluationRecord:
        """Store an evaluation of a run (replacing an earlier one of the same run, task, data and split)."""
        row = {
            "eval_id": uuid.uuid4().hex, "run_id": evaluation.run_id, "task": evaluation.task,
            "data_path": evaluation.data_path, "split": evaluation.split,
            "n_examples": evaluation.n_examples, "max_examples": evaluation.max_examples,
            "metric": evaluation.metric, "score": float(evaluation.score),
            "ci_low": evaluation.interval[0] if evaluation.interval else None,
            "ci_high": evaluation.interval[1] if evaluation.interval else None,
            "metrics": json.dumps(evaluation.metrics), "baselines": json.dumps(_with_details(evaluation)),
            "notes": json.dumps(evaluation.notes), "predictions_dir": evaluation.predictions_dir,
            "created_at": _now(),
        }  # fmt: skip
        with self._connect() as db:
            self._require(db, evaluation.run_id)
            columns, marks = ", ".join(row), ", ".join("?" * len(row))
            statement = f"INSERT OR REPLACE INTO evaluations ({columns}) VALUES ({marks})"
            db.execute(statement, tuple(row.values()))
        return _evaluation(row)

    def list_evaluations(self, run_ids: list[str] | None = None) -> list[EvaluationRecord]:
        """Evaluations in creation order, of the given runs (all runs when None)."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM evaluations ORDER BY created_at, rowid").fetchall()
        wanted = None if run_ids is None else set(run_ids)
        return [_evaluation(dict(r)) for r in rows if wanted is None or r["run_id"] in wanted]


def _with_details(evaluation: EvaluationRecord) -> dict[str, Any]:
    return evaluation.baselines | ({DETAILS_KEY: evaluation.details} if evaluation.details else {})


def _evaluation(row: dict[str, Any]) -> EvaluationRecord:
    low, high = row["ci_low"], row["ci_high"]
    baselines = json.loads(row["baselines"])
    details = baselines.pop(DETAILS_KEY, {})
    return EvaluationRecord(
        **{k: row[k] for k in ("run_id", "task", "data_path", "split", "n_examples", "max_examples")},
        metric=row["metric"],
        score=row["score"],
        interval=None if low is None or high is None else (low, high),
        **{k: json.loads(row[k]) for k in ("metrics", "notes")},
        baselines=baselines,
        predictions_dir=row["predictions_dir"],
        eval_id=row["eval_id"],
        created_at=row["created_at"],
        details=details,
    )


def _shown_status(row: sqlite3.Row) -> str:
    # Only a process on this host can be checked; elsewhere "running" is taken at its word.
    checkable = row["status"] == "running" and row["host"] == platform.node()
    return "interrupted" if checkable and not _alive(row["pid"], row["pid_started"]) else row["status"]


def _record(row: sqlite3.Row, metrics: dict) -> RunRecord:
    json_columns = ("tasks", "config", "baselines", "cost", "data_quality", "versions", "details")
    plain_columns = (
        "run_id", "name", "study", "group_id", "mode", "model", "method", "seed", "config_hash",
        "run_dir", "error", "created_at", "finished_at",
    )  # fmt: skip
    return RunRecord(
        **{c: row[c] for c in plain_columns},
        **{c: json.loads(row[c]) for c in json_columns},
        status=_shown_status(row),
        metrics=metrics,
    )


def _test_pause_hook() -> None:
    # Test hook: MTPEFT_STORE_PAUSE=seconds sleeps between the two writes of finish_run (announced on
    # stderr), so a test can SIGKILL the process mid-transaction and check nothing half-written shows.
    pause = os.environ.get("MTPEFT_STORE_PAUSE")
    if pause:
        print(f"{PAUSE_MESSAGE} {pause} s", file=sys.stderr, flush=True)
        time.sleep(float(pause))
