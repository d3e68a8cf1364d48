"""`mtpeft predict RUN_DIR INPUT|-`: JSON lines in, JSON lines out, located errors, streaming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

VULNERABLE = "int f ( char * s ) { danger_call ( s , input ) ; return 0 ; }"
SAFE = "int g ( char * s , int len ) { safe_copy ( s , input , len ) ; return len ; }"
CLONE_A = "static int sumA ( int [ ] v ) { int acc = 0 ; for ( int x : v ) acc += x ; return acc ; }"
CLONE_B = "static int sumB ( int [ ] w ) { int acc = 0 ; for ( int x : w ) acc += x ; return acc ; }"


def _lines(*records: object) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def _rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_each_line_gets_the_apis_answers_in_input_order(run, run_dir, mtpeft_cli, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        _lines(
            {"code": VULNERABLE, "id": "v1"},
            {"code": CLONE_A, "code_b": CLONE_B, "id": 7},
            "",
            {"code": SAFE},
        )
    )
    done = mtpeft_cli("predict", run_dir, source, "--batch-size", "2")
    assert done.code == 0, done.err
    rows = _rows(done.out)
    assert [r["id"] for r in rows] == ["v1", 7, 4]  # no id: the line number (blank line 3 skipped)
    expected = run.analyze([VULNERABLE, SAFE])
    for row, answer in zip((rows[0], rows[2]), expected, strict=True):
        assert set(row["predictions"]) == {"vulnerability", "complexity"}
        for task, prediction in row["predictions"].items():
            assert set(prediction) == {"label", "probability", "ood_score", "unfamiliar"}
            assert prediction["label"] == answer[task]["label"]
            assert prediction["probability"] == pytest.approx(answer[task]["probability"], abs=1e-6)
    pair = run.compare(CLONE_A, CLONE_B, task="clone")
    assert rows[1]["predictions"] == {
        "clone": {"label": pair["label"], "probability": pytest.approx(pair["probability"], abs=1e-6)}
    }
    assert "answered 3 lines" in done.err


def test_a_bad_line_stops_by_default_after_answering_the_lines_before_it(run_dir, mtpeft_cli):
    stdin = _lines({"code": SAFE}, {"code": VULNERABLE}, "{not json", {"code": SAFE})
    done = mtpeft_cli("predict", run_dir, "-", "--batch-size", "8", stdin=stdin)
    assert done.code == 2
    assert "<stdin>, line 3: not valid JSON" in done.err
    assert [r["id"] for r in _rows(done.out)] == [1, 2]  # the lines before it were answered


def test_skip_reports_each_bad_line_with_its_number_and_answers_the_rest(run_dir, mtpeft_cli, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        _lines(
            {"code": SAFE},
            ["a list"],
            {"source": SAFE},
            {"code": 42},
            '{"code": "bad \\ud800 surrogate"}',
            {"code": SAFE, "id": 1.5},
        )
        + b'{"code": "caf\xe9"}\n'
        + _lines({"code": VULNERABLE, "id": "last"})
    )
    done = mtpeft_cli("predict", run_dir, source, "--on-error", "skip")
    assert done.code == 0, done.err
    assert [r["id"] for r in _rows(done.out)] == [1, "last"]
    for expected in (
        "line 2: expected a JSON object",
        "line 3, field 'code': missing",
        "line 4, field 'code': must be a string, not int",
        "line 5, field 'code': holds a lone UTF-16 surrogate",
        "line 6, field 'id': must be a string or an integer, not float",
        "line 7: not UTF-8 (byte 0xe9",
    ):
        assert expected in done.err, expected
    assert "skipped 6 bad lines" in done.err


# ---- issue 24, items 9 and 14: hostile lines are that line's error; blank code is refused ----------------
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5000  # Python's int() refuses more than 4300 digits: a ValueError before


@pytest.mark.parametrize(
    ("bad_line", "says"),
    [
        ('{"code": "x", "meta": ' + DEEP + "}", "line 2: JSON nested more than 64 levels deep"),
        ('{"code": "x", "id": ' + HUGE_INT + "}", "line 2, field 'id': a JSON integer of 5000 digits"),
        (
            '{"code": "x", "meta": {"n": [1, ' + "7" * 10_000 + "]}}",
            "line 2, field 'n': a JSON integer of 10000",
        ),
        ('{"code": "int a;", "code": "int b;"}', "line 2, field 'code': the key 'code' appears twice"),
        ('{"code": "  \\n\\t  "}', "line 2, field 'code': is empty (only whitespace)"),
        ('{"code": ""}', "line 2, field 'code': is empty"),
        ('{"code": "' + CLONE_A + '", "code_b": " "}', "line 2, field 'code_b': is empty"),
    ],
)
@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_a_hostile_line_is_its_own_error_and_the_good_lines_around_it_are_answered(
    run_dir, mtpeft_cli, bad_line, says, on_error
):
    stdin = _lines({"code": SAFE, "id": "before"}, bad_line, {"code": VULNERABLE, "id": "after"})
    done = mtpeft_cli("predict", run_dir, "-", "--on-error", on_error, stdin=stdin)
    assert "Traceback" not in done.err and f"<stdin>, {says}" in done.err, done.err
    assert max(map(len, done.err.splitlines())) < 400  # the line itself is not quoted back
    ids = [r["id"] for r in _rows(done.out)]
    if on_error == "stop":
        assert done.code == 2 and ids == ["before"]
    else:
        assert done.code == 0 and ids == ["before", "after"] and "skipped 1 bad line" in done.err


def test_tasks_option_selects_and_explains(run_dir, mtpeft_cli):
    only = mtpeft_cli("predict", run_dir, "-", "--tasks", "complexity", stdin=_lines({"code": SAFE}))
    assert only.code == 0 and set(_rows(only.out)[0]["predictions"]) == {"complexity"}
    with_all = mtpeft_cli("predict", run_dir, "-", "--probabilities", stdin=_lines({"code": SAFE}))
    probabilities = _rows(with_all.out)[0]["predictions"]["complexity"]["probabilities"]
    assert list(probabilities) == ["1", "logn", "n", "nlogn", "n_square"]
    search = mtpeft_cli("predict", run_dir, "-", "--tasks", "code-search", stdin=_lines({"code": SAFE}))
    assert search.code == 2 and "retrieval task" in search.err and "mtpeft search" in search.err
    unknown = mtpeft_cli("predict", run_dir, "-", "--tasks", "vulnerabilty", stdin=_lines({"code": SAFE}))
    assert unknown.code == 2 and "unknown task 'vulnerabilty'" in unknown.err
    pair_only = mtpeft_cli("predict", run_dir, "-", "--tasks", "clone", stdin=_lines({"code": SAFE}))
    assert pair_only.code == 2 and "line 1, field 'code_b': missing" in pair_only.err
    missing = mtpeft_cli("predict", run_dir, "nowhere.jsonl")
    assert missing.code == 2 and "nowhere.jsonl: no such file" in missing.err


def test_stdin_is_answered_batch_by_batch_not_after_it_closes(run_dir: Path):
    """A line is answered while stdin is still open: the command streams."""
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cli = [sys.executable, "-m", "mtpeft.cli.main", "predict", str(run_dir), "-", "--batch-size", "1"]
    with subprocess.Popen(
        cli, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        watchdog = threading.Timer(120, process.kill)  # a command that waits for EOF fails, not hangs
        watchdog.start()
        try:
            for number, code in enumerate((SAFE, VULNERABLE), 1):
                process.stdin.write(_lines({"code": code}))
                process.stdin.flush()
                started = time.monotonic()
                row = json.loads(process.stdout.readline())  # blocks until that line is answered
                assert row["id"] == number and time.monotonic() - started < 60
        finally:
            process.stdin.close()
            process.wait(timeout=60)
            watchdog.cancel()
    assert process.returncode == 0


def test_predict_refuses_to_write_over_its_input(run_dir, mtpeft_cli, tmp_path, monkeypatch):
    """The issue's reproduction: `predict RUN in.jsonl --out in.jsonl` used to empty in.jsonl and exit 0."""
    monkeypatch.chdir(tmp_path)
    Path("in.jsonl").write_bytes(_lines({"code": SAFE}, {"code": VULNERABLE}))
    before = Path("in.jsonl").read_bytes()
    done = mtpeft_cli("predict", run_dir, "in.jsonl", "--out", "in.jsonl")
    assert done.code == 2 and "--out 'in.jsonl' is the input 'in.jsonl'" in done.err
    assert "Traceback" not in done.err and "answered" not in done.err
    assert Path("in.jsonl").read_bytes() == before


@pytest.mark.parametrize("spelling", ["dotdot", "symlink", "hardlink"])
def test_predict_refuses_its_input_by_any_spelling_or_link(run_dir, mtpeft_cli, tmp_path, spelling):
    source = tmp_path / "in.jsonl"
    source.write_bytes(_lines({"code": SAFE}))
    (tmp_path / "x").mkdir()
    out = {
        "dotdot": tmp_path / "x" / ".." / "in.jsonl",
        "symlink": tmp_path / "s",
        "hardlink": tmp_path / "h",
    }
    if spelling == "symlink":
        out["symlink"].symlink_to(source)
    if spelling == "hardlink":
        os.link(source, out["hardlink"])
    done = mtpeft_cli("predict", run_dir, source, "--out", out[spelling])
    assert done.code == 2 and "is the input" in done.err
    assert source.read_bytes() == _lines({"code": SAFE})


def test_predict_refuses_an_out_that_is_the_file_behind_stdin(run_dir: Path, tmp_path):
    """`mtpeft predict RUN - --out in.jsonl < in.jsonl`: the same loss, through a redirection."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(_lines({"code": SAFE}))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cli = [sys.executable, "-m", "mtpeft.cli.main", "predict", str(run_dir), "-", "--out", str(source)]
    with source.open("rb") as stdin:
        done = subprocess.run(cli, stdin=stdin, capture_output=True, env=env, timeout=120)
    assert done.returncode == 2 and b"is the input '<stdin>'" in done.stderr
    assert source.read_bytes() == _lines({"code": SAFE})


def test_an_interrupted_predict_leaves_the_previous_out_intact(run_dir, mtpeft_cli, tmp_path, monkeypatch):
    from mtpeft.cli import predict_cmd

    source, out = tmp_path / "in.jsonl", tmp_path / "answers.jsonl"
    source.write_bytes(_lines({"code": SAFE}, {"code": VULNERABLE}, {"code": SAFE}))
    out.write_text("yesterday's answers\n")
    real_answer, calls = predict_cmd._answer, []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or a crash) after the first batch was written
        return real_answer(*args, **kwargs)

    monkeypatch.setattr(predict_cmd, "_answer", dies_on_the_second_batch)
    done = mtpeft_cli("predict", run_dir, source, "--out", out, "--batch-size", "1")
    assert done.code == 130 and len(calls) == 2  # Ctrl-C: the conventional 128 + SIGINT
    assert out.read_text() == "yesterday's answers\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "in.jsonl"]  # no temporary file


def test_a_stopping_bad_line_keeps_the_answers_before_it_in_out(run_dir, mtpeft_cli, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "answers.jsonl"
    source.write_bytes(_lines({"code": SAFE}, "{not json", {"code": SAFE}))
    done = mtpeft_cli("predict", run_dir, source, "--out", out)
    assert done.code == 2 and "line 2: not valid JSON" in done.err
    assert [r["id"] for r in _rows(out.read_text())] == [1]
    missing = mtpeft_cli("predict", run_dir, source, "--out", tmp_path / "no" / "such" / "out.jsonl")
    assert missing.code == 2 and "does not exist; create it first" in missing.err
