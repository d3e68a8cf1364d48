"""The results store: every run, its config and hash, status, metrics, cost and versions in SQLite.

One file per workspace (stdlib sqlite3, WAL). A run's final write is one transaction, so a killed
process leaves a run "running" (shown as "interrupted" once its process is gone), never a
half-written row that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT NOT NULL, study TEXT, group_id TEXT, mode TEXT NOT NULL,
    model TEXT NOT NULL, method TEXT NOT NULL, tasks TEXT NOT NULL, seed INTEGER NOT NULL,
    config TEXT NOT NULL, config_hash TEXT NOT NULL, status TEXT NOT NULL,
    baselines TEXT NOT NULL DEFAULT '{}', cost TEXT NOT NULL DEFAULT '{}',
    data_quality TEXT NOT NULL DEFAULT '{}', versions TEXT NOT NULL DEFAULT '{}',
    run_dir TEXT NOT NULL, error TEXT, pid INTEGER, host TEXT,
    created_at TEXT NOT NULL, finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_hash ON runs (config_hash, status);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id), split TEXT NOT NULL, task TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (run_id, split, task, metric)
);
"""


def config_hash(config: dict[str, Any]) -> str:
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


@dataclass
class RunRecord:
    run_id: str
    name: str
    study: str | None
    group_id: str | None
    mode: str
    model: str
    method: str
    tasks: list[str]
    seed: int
    config: dict
    config_hash: str
    status: str
    metrics: dict
    baselines: dict
    cost: dict
    data_quality: dict
    versions: dict
    run_dir: str
    error: str | None
    created_at: str
    finished_at: str | None


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            if db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        try:
            with db:  # one transaction: committed on success, rolled back on any error
                yield db
        finally:
            db.close()

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
        run_id = uuid.uuid4().hex
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (run_id, name, study, group_id, mode, model, method, tasks, seed, config,"
                " config_hash, status, versions, run_dir, pid, host, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    name,
                    study,
                    group_id,
                    mode,
                    model,
                    method,
                    json.dumps(tasks),
                    seed,
                    json.dumps(config, default=str),
                    config_hash(config),
                    "running",
                    json.dumps(software_versions()),
                    run_dir,
                    os.getpid(),
                    platform.node(),
                    _now(),
                ),
            )
        return run_id

    def resume_run(self, run_id: str) -> None:
        """A resumed run is running again, in this process."""
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status='running', error=NULL, pid=?, host=? WHERE run_id=?",
                (os.getpid(), platform.node(), run_id),
            )

    def finish_run(
        self,
        run_id: str,
        *,
        metrics: dict,
        cost: dict,
        baselines: dict | None = None,
        data_quality: dict | None = None,
    ) -> None:
        with self._connect() as db:
            self._write_metrics(db, run_id, metrics)
            _test_pause_hook()
            db.execute(
                "UPDATE runs SET status='finished', cost=?, baselines=?, data_quality=?, finished_at=?,"
                " error=NULL WHERE run_id=?",
                (
                    json.dumps(cost),
                    json.dumps(baselines or {}),
                    json.dumps(data_quality or {}),
                    _now(),
                    run_id,
                ),
            )

    def update_metrics(self, run_id: str, split: str, metrics: dict) -> None:
        with self._connect() as db:
            self._write_metrics(db, run_id, {split: metrics})

    def set_metric(self, run_id: str, split: str, task: str, metric: str, value: float) -> None:
        with self._connect() as db:
            self._write_metrics(db, run_id, {split: {task: {metric: value}}})

    def fail_run(self, run_id: str, error: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status='failed', error=?, finished_at=? WHERE run_id=?",
                (error, _now(), run_id),
            )

    @staticmethod
    def _write_metrics(db: sqlite3.Connection, run_id: str, metrics: dict) -> None:
        rows = [
            (run_id, split, task, metric, float(value))
            for split, by_task in metrics.items()
            for task, by_metric in by_task.items()
            for metric, value in by_metric.items()
        ]
        db.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?)", rows)

    # ---- reads ----------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        records = self._select("WHERE run_id = ?", (run_id,))
        if not records:
            raise KeyError(f"no run {run_id} in {self.path}")
        return records[0]

    def list_runs(self, *, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        clauses, args = [], []
        if study is not None:
            clauses.append("study = ?")
            args.append(study)
        records = self._select(("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args))
        return [r for r in records if status is None or r.status == status]

    def find_finished(self, config_hash_: str) -> RunRecord | None:
        records = self._select("WHERE config_hash = ? AND status = 'finished'", (config_hash_,))
        return records[-1] if records else None

    def _select(self, where: str, args: tuple) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY created_at, rowid", args).fetchall()
            metric_rows = db.execute("SELECT * FROM metrics").fetchall() if rows else []
        metrics: dict[str, dict] = {}
        for m in metric_rows:
            metrics.setdefault(m["run_id"], {}).setdefault(m["split"], {}).setdefault(m["task"], {})[
                m["metric"]
            ] = m["value"]
        return [self._record(row, metrics.get(row["run_id"], {})) for row in rows]

    @staticmethod
    def _record(row: sqlite3.Row, metrics: dict) -> RunRecord:
        status = row["status"]
        if status == "running" and row["host"] == platform.node() and not _alive(row["pid"]):
            status = "interrupted"
        return RunRecord(
            run_id=row["run_id"],
            name=row["name"],
            study=row["study"],
            group_id=row["group_id"],
            mode=row["mode"],
            model=row["model"],
            method=row["method"],
            tasks=json.loads(row["tasks"]),
            seed=row["seed"],
            config=json.loads(row["config"]),
            config_hash=row["config_hash"],
            status=status,
            metrics=metrics,
            baselines=json.loads(row["baselines"]),
            cost=json.loads(row["cost"]),
            data_quality=json.loads(row["data_quality"]),
            versions=json.loads(row["versions"]),
            run_dir=row["run_dir"],
            error=row["error"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
        )


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _test_pause_hook() -> None:
    # Test hook: MTPEFT_STORE_PAUSE=seconds sleeps between the two writes of finish_run, so a test
    # can SIGKILL the process mid-transaction and check nothing half-written shows.
    pause = os.environ.get("MTPEFT_STORE_PAUSE")
    if pause:
        import time

        time.sleep(float(pause))
