"""The results store: round trip, merging, statuses as a user sees them, atomic finish under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtpeft.errors import MtpeftError
from mtpeft.store import EvaluationRecord, RunNotFound, RunStore, config_hash
from mtpeft.store.sqlite import MIGRATIONS, PAUSE_MESSAGE, SCHEMA_VERSION

METRICS = {"valid": {"vuln": {"accuracy": 0.7, "f1": 0.6}}, "test": {"vuln": {"accuracy": 0.65}}}
COST = {"trainable_params": 1000, "wall_time_s": 12.5, "tokens_by_task": {"vuln": 400}}


def _start(store: RunStore, **overrides) -> str:
    fields = {
        "name": "lora-multi", "study": "s1", "group_id": None, "mode": "multi", "model": "minilm",
        "method": "lora", "tasks": ["vuln", "clone"], "seed": 1, "config": {"lr": 1e-4, "r": 8},
        "run_dir": "/tmp/run",
    } | overrides  # fmt: skip
    return store.start_run(**fields)


def test_round_trip(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    run_id = _start(store)
    running = store.get(run_id)
    assert running.status == "running"  # this process is alive
    assert running.config_hash == config_hash({"lr": 1e-4, "r": 8})
    assert running.versions["python"] and "torch" in running.versions
    store.finish_run(run_id, metrics=METRICS, cost=COST, baselines={"vuln": {"majority": {"accuracy": 0.5}}},
                     data_quality={"vuln": {"duplicates": 3}})  # fmt: skip
    record = RunStore(tmp_path / "mtpeft.sqlite").get(run_id)  # a fresh handle reads the same
    assert (record.status, record.metrics, record.cost) == ("finished", METRICS, COST)
    assert record.baselines == {"vuln": {"majority": {"accuracy": 0.5}}}
    assert record.data_quality == {"vuln": {"duplicates": 3}}
    assert (record.tasks, record.seed, record.mode, record.study) == (["vuln", "clone"], 1, "multi", "s1")
    assert record.finished_at is not None and record.error is None


def test_metrics_are_normalised_rows_for_reports(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    store.finish_run(run_id, metrics=METRICS, cost={})
    rows = (
        sqlite3.connect(tmp_path / "s.sqlite")
        .execute(
            "SELECT split, task, metric, value FROM metrics WHERE run_id = ? ORDER BY split, metric",
            (run_id,),
        )
        .fetchall()
    )
    assert rows == [("test", "vuln", "accuracy", 0.65), ("valid", "vuln", "accuracy", 0.7),
                    ("valid", "vuln", "f1", 0.6)]  # fmt: skip


def test_update_metrics_merges_a_later_split(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    store.finish_run(run_id, metrics={"valid": {"vuln": {"accuracy": 0.7}}}, cost={})
    store.update_metrics(run_id, "test", {"vuln": {"accuracy": 0.6}, "clone": {"f1": 0.8}})
    store.set_metric(run_id, "valid", "vuln", "accuracy", 0.75)  # overwrites one value
    assert store.get(run_id).metrics == {
        "valid": {"vuln": {"accuracy": 0.75}},
        "test": {"vuln": {"accuracy": 0.6}, "clone": {"f1": 0.8}},
    }


def test_find_finished_by_config_hash(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    wanted = {"lr": 1e-4, "r": 8, "tasks": ["a", "b"]}
    assert store.find_finished(config_hash(wanted)) is None
    running = _start(store, config=wanted)
    assert store.find_finished(config_hash(wanted)) is None  # running is not done
    store.finish_run(running, metrics={}, cost={})
    other = _start(store, config={"lr": 1e-3})
    store.finish_run(other, metrics={}, cost={})
    # Key order does not change the hash: the same config written differently is found.
    found = store.find_finished(config_hash({"tasks": ["a", "b"], "r": 8, "lr": 1e-4}))
    assert found is not None and found.run_id == running


def test_failed_runs_keep_their_error(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    store.fail_run(run_id, "ValueError: boom")
    record = store.get(run_id)
    assert (record.status, record.error) == ("failed", "ValueError: boom")
    assert store.find_finished(record.config_hash) is None


def test_a_run_stopped_by_the_user_is_interrupted_not_failed_and_resumes(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    store.interrupt_run(run_id, "stopped by the user (KeyboardInterrupt)")
    assert [r.run_id for r in store.list_runs(status="interrupted")] == [run_id]
    assert store.list_runs(status="failed") == []
    store.resume_run(run_id)
    assert (store.get(run_id).status, store.get(run_id).error) == ("running", None)


def test_list_runs_filters_by_study_and_shown_status(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    a, b = _start(store, study="s1"), _start(store, study="s2", group_id="g1")
    store.finish_run(a, metrics={}, cost={})
    assert [r.run_id for r in store.list_runs(study="s1")] == [a]
    assert [r.run_id for r in store.list_runs(status="running")] == [b]
    assert store.list_runs(study="s2")[0].group_id == "g1"
    with pytest.raises(MtpeftError, match="unknown run status"):
        store.list_runs(status="done")


def test_unknown_run_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    with pytest.raises(RunNotFound, match="no run 'nope'"):
        store.get("nope")
    with pytest.raises(RunNotFound):
        store.finish_run("nope", metrics=METRICS, cost={})
    with pytest.raises(KeyError):  # dict-like callers can catch KeyError
        store.update_metrics("nope", "test", {"t": {"m": 1.0}})
    assert sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT COUNT(*) FROM metrics").fetchone() == (0,)


def _child(script: str, store_path: Path, env: dict | None = None) -> subprocess.Popen:
    code = textwrap.dedent(script).format(path=str(store_path), fields=repr(_CHILD_FIELDS))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ | (env or {}))  # fmt: skip


_CHILD_FIELDS = {
    "name": "r", "study": None, "group_id": None, "mode": "single", "model": "m", "method": "lora",
    "tasks": ["vuln"], "seed": 0, "config": {"a": 1}, "run_dir": "/tmp/r",
}  # fmt: skip


def test_a_run_whose_process_died_shows_as_interrupted(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    child = _child(
        """
        from mtpeft.store import RunStore
        print(RunStore({path!r}).start_run(**{fields}))
        """,
        tmp_path / "s.sqlite",
    )
    run_id = child.communicate(timeout=60)[0].strip()
    assert store.get(run_id).status == "interrupted"
    assert [r.run_id for r in store.list_runs(status="interrupted")] == [run_id]
    store.resume_run(run_id)  # resumed here: alive again
    assert store.get(run_id).status == "running"


def test_a_reused_pid_does_not_look_alive(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run_id = _start(store)
    # Same pid as a live process (this one) but another start time: the writer is gone.
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute("UPDATE runs SET pid_started = pid_started - 3600 WHERE run_id = ?", (run_id,))
    assert store.get(run_id).status == "interrupted"


def test_sigkill_in_the_middle_of_finish_run_leaves_no_partial_result(tmp_path):
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    child = _child(
        """
        from mtpeft.store import RunStore
        store = RunStore({path!r})
        run_id = store.start_run(**{fields})
        print(run_id, flush=True)
        store.finish_run(run_id, metrics={{"test": {{"vuln": {{"accuracy": 0.9}}}}}}, cost={{"x": 1}})
        """,
        path,
        env={"MTPEFT_STORE_PAUSE": "60"},  # the store's test hook: sleep between metrics and status writes
    )
    run_id = child.stdout.readline().strip()
    announced = child.stderr.readline()  # the hook runs after the metrics rows, before the status
    assert announced.startswith(PAUSE_MESSAGE), announced
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    record = store.get(run_id)
    assert record.status == "interrupted"
    assert record.metrics == {} and record.cost == {}
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM metrics").fetchone() == (0,)
    store.finish_run(run_id, metrics={"test": {"vuln": {"accuracy": 0.8}}}, cost={})  # the store still works
    assert store.get(run_id).status == "finished"


def test_concurrent_processes_share_one_store(tmp_path):
    path = tmp_path / "fresh" / "s.sqlite"  # all children create it at once
    script = """
        from mtpeft.store import RunStore
        store = RunStore({path!r})
        run_id = store.start_run(**{fields})
        store.finish_run(run_id, metrics={{"test": {{"vuln": {{"accuracy": 0.5}}}}}}, cost={{}})
        """
    children = [_child(script, path) for _ in range(4)]
    errors = [c.communicate(timeout=60)[1] for c in children]
    assert [c.returncode for c in children] == [0, 0, 0, 0], errors
    assert [r.status for r in RunStore(path).list_runs()] == ["finished"] * 4


def test_a_store_from_a_newer_mtpeft_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    RunStore(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(MtpeftError, match="newer"):
        RunStore(path)


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 64


# ---- evaluations of runs on other data (`mtpeft evaluate RUN --data TASK=PATH`) ----------------------
def _evaluation(run_id: str, **overrides) -> EvaluationRecord:
    fields = {
        "run_id": run_id, "task": "vuln", "data_path": "/data/cross-project", "split": "test",
        "n_examples": 400, "max_examples": None, "metric": "accuracy", "score": 0.61,
        "interval": (0.56, 0.66), "metrics": {"accuracy": 0.61, "f1": 0.4},
        "baselines": {"majority": {"accuracy": 0.55}}, "notes": ["TF-IDF baseline skipped: gone"],
        "predictions_dir": "/ws/runs/r/predictions/vuln@cross-project-0a1b2c3d/test",
    } | overrides  # fmt: skip
    return EvaluationRecord(**fields)


def test_evaluations_round_trip_and_a_repeat_replaces_the_earlier_one(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    run_id, other_run = _start(store), _start(store, name="other")
    stored = store.record_evaluation(_evaluation(run_id))
    assert stored.eval_id and stored.created_at
    [again] = RunStore(tmp_path / "mtpeft.sqlite").list_evaluations()
    assert again == stored and again.interval == (0.56, 0.66)
    assert again.notes == ["TF-IDF baseline skipped: gone"]
    assert again.baselines == {"majority": {"accuracy": 0.55}}
    # Same run, task, data and split: replaced (as its prediction files are); another split: a new row.
    store.record_evaluation(_evaluation(run_id, score=0.7, interval=None, max_examples=100))
    store.record_evaluation(_evaluation(run_id, split="valid"))
    store.record_evaluation(_evaluation(other_run))
    rows = store.list_evaluations([run_id])
    assert [(e.split, e.score, e.interval, e.max_examples) for e in rows] == [
        ("test", 0.7, None, 100), ("valid", 0.61, (0.56, 0.66), None)
    ]  # fmt: skip
    assert len(store.list_evaluations()) == 3


def test_evaluation_details_round_trip_without_a_schema_change(tmp_path):
    """Calibration, precision and OOD details ride in the baselines column: no migration, and a row
    recorded before them (or by an older mtpeft) reads back with no details."""
    store = RunStore(tmp_path / "mtpeft.sqlite")
    run_id = _start(store)
    details = {"calibration": {"ece_before": 0.2, "ece_after": 0.1}, "ood": {"skipped": "no statistics"}}
    stored = store.record_evaluation(_evaluation(run_id, details=details))
    older = store.record_evaluation(_evaluation(run_id, split="valid"))
    [again, plain] = RunStore(tmp_path / "mtpeft.sqlite").list_evaluations()
    assert again == stored and again.details == details
    assert again.baselines == {"majority": {"accuracy": 0.55}}  # never seen as a baseline
    assert plain == older and plain.details == {}
    with sqlite3.connect(tmp_path / "mtpeft.sqlite") as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        row = db.execute("SELECT baselines FROM evaluations WHERE split = 'valid'").fetchone()[0]
    assert json.loads(row) == {"majority": {"accuracy": 0.55}}  # what an older mtpeft writes and reads


def test_an_evaluation_of_an_unknown_run_is_refused(tmp_path):
    store = RunStore(tmp_path / "mtpeft.sqlite")
    with pytest.raises(RunNotFound, match="no run 'nope'"):
        store.record_evaluation(_evaluation("nope"))
    assert store.list_evaluations() == []


def test_a_store_of_schema_2_migrates_and_keeps_its_runs(tmp_path):
    path = tmp_path / "mtpeft.sqlite"
    db = sqlite3.connect(path)  # a store as the previous version left it: migrations 1 and 2 only
    for version in (1, 2):
        db.executescript(MIGRATIONS[version])
    db.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (2)")
    db.execute(
        "INSERT INTO runs (run_id, name, mode, model, method, tasks, seed, config, config_hash, status, "
        "run_dir, created_at) VALUES ('r1', 'old', 'multi', 'minilm', 'lora', '[\"vuln\"]', 0, '{}', 'h', "
        "'finished', 'ws/runs/old', '2024-01-01T00:00:00+00:00')"
    )
    db.commit()
    db.close()
    store = RunStore(path)
    assert [r.name for r in store.list_runs()] == ["old"] and store.list_evaluations() == []
    store.record_evaluation(_evaluation("r1"))
    version = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 4 and len(store.list_evaluations()) == 1
