"""`mtpeft scan PATH --run RUN_DIR`: the scan package driven by a real trained run, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "scan" / "sarif-schema-2.1.0.json"

PY_SUM = (
    "def weighted_sum(values, weights, offsets):\n    total = 0\n    for i in range(len(values)):\n"
    "        total = total + values[i] * weights[i] + offsets[i]\n    return total\n"
)
TREE: dict[str, str | bytes] = {
    "src/app.py": PY_SUM + "\n\ndef evaluate(expr):\n    return eval(expr)\n",
    "src/copy.py": PY_SUM,  # an exact duplicate of app.weighted_sum
    "src/util.c": (
        "#include <string.h>\nvoid copy(char *dst, const char *src) {\n    strcpy(dst, src);\n"
        "    danger_call(dst, src);\n}\n\nint add(int a, int b) {\n    int total = a;\n"
        "    for (int k = 0; k < b; k++) total += 1;\n    return total;\n}\n"
    ),
    "src/Catalog.java": (
        "class Catalog {\n    int sum(int[] v) {\n        int acc = 0;\n        for (int x : v) acc += x;\n"
        "        return acc;\n    }\n    @Test\n    public void waits() throws Exception {\n"
        "        Thread.sleep(100);\n    }\n}\n"
    ),
    "src/[red]markup.py": "def styled():\n    return '[bold]not markup[/bold]'\n",
    "bin/blob.c": b"\x00\x01binary",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for rel, content in TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def test_sarif_of_a_python_java_c_tree_validates_against_the_schema(run_dir, tree, tmp_path, mtpeft_cli):
    report = tmp_path / "scan.sarif"
    # Threshold 0: every analysed unit is a finding, so every language shows up in the log (the tiny run
    # learnt templated fixtures: this hand-written code is unlike them, reported with --include-unfamiliar).
    done = mtpeft_cli(
        "scan",
        tree,
        "--run",
        run_dir,
        "--format",
        "sarif",
        "--out",
        report,
        "--threshold",
        "0,0,0",
        "--include-unfamiliar",
    )
    assert done.code == 0, done.err
    log = json.loads(report.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))).validate(log)
    results = log["runs"][0]["results"]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert {"src/app.py", "src/util.c", "src/Catalog.java"} <= uris
    assert {r["ruleId"] for r in results} >= {"mtpeft/vulnerability", "mtpeft/exact-duplicate"}
    # The closing counts on stderr: skipped files and truncated functions.
    assert "1 file skipped" in done.err and "functions truncated to 40 tokens" in done.err
    assert "analyzing" in done.err  # the progress bar


def test_json_answers_are_the_apis_answers(run, run_dir, tree, mtpeft_cli):
    done = mtpeft_cli("scan", tree, "--run", run_dir, "--format", "json", "--include-code", "--no-progress")
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["run"]["run_id"] == run.run_id and report["max_tokens"] == run.max_tokens
    functions = [u for u in report["units"] if u["kind"] != "test"]
    assert {u["language"] for u in functions} == {"python", "c", "java"}
    expected = run.analyze([u["code"] for u in functions])
    for unit, answer in zip(functions, expected, strict=True):
        assert set(unit["answers"]) == {"vulnerability", "complexity"}  # the run's one-snippet tasks
        for task, got in unit["answers"].items():
            assert got["label"] == answer[task]["label"]
            assert got["probability"] == pytest.approx(answer[task]["probability"], abs=1e-5)
    assert report["summary"]["skipped"] == 1
    assert any(p["exact"] for p in report["clone_pairs"])


def test_exit_status_is_zero_with_findings_unless_fail_on(run_dir, tree, mtpeft_cli):
    # --include-unfamiliar: this hand-written code is unlike the tiny run's templated training data
    args = ("scan", tree, "--run", run_dir, "--threshold", "0,0,0", "--no-progress", "--no-clones",
            "--include-unfamiliar")  # fmt: skip
    plain = mtpeft_cli(*args)
    assert plain.code == 0 and "Findings (" in plain.out
    assert "[red]markup.py" in plain.out  # a file name is printed as written, never as markup
    failing = mtpeft_cli(*args, "--fail-on", "error")
    assert failing.code == 1 and "at level error or above (--fail-on error)" in failing.err
    strict = ("scan", tree, "--run", run_dir, "--threshold", "1,1,1", "--no-progress")
    assert mtpeft_cli(*strict, "--fail-on", "warning").code == 0  # no finding reaches P = 1
    duplicate = mtpeft_cli(*strict, "--fail-on", "note")  # but the exact duplicate is a note-level result
    assert duplicate.code == 1 and "1 result(s) at level note" in duplicate.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--format", "xml"), "--format 'xml': choose one of table, json, sarif, html"),
        (("--threshold", "high"), "--threshold: thresholds 'high': expected three numbers"),
        (("--fail-on", "fatal"), "--fail-on 'fatal': choose one of error, warning, note"),
        (("--tasks", "vulnerabilty"), "unknown task(s) ['vulnerabilty']"),
        (("--language", "cobol"), "cobol"),
    ],
)
def test_bad_options_are_one_error_line(run_dir, tree, mtpeft_cli, extra, message):
    done = mtpeft_cli("scan", tree, "--run", run_dir, "--no-progress", *extra)
    assert done.code == 2 and message in done.err and "Traceback" not in done.err


def test_scanning_a_missing_path_or_with_a_missing_run_says_so(run_dir, tree, tmp_path, mtpeft_cli):
    missing = mtpeft_cli("scan", tmp_path / "nowhere", "--run", run_dir)
    assert missing.code == 2 and "no such file or folder to scan" in missing.err
    no_run = mtpeft_cli("scan", tree, "--run", tmp_path / "no-run")
    assert no_run.code == 2 and "no such run directory" in no_run.err


def test_every_hostile_file_of_issue_24_at_once_gives_a_valid_sarif_and_exit_0(run_dir, tmp_path, mtpeft_cli):
    """A non-UTF-8 file name, the issue's four deep files and names with terminal controls and markup,
    in one tree, through a real run: a schema-valid SARIF naming every file, and exit 0."""
    import os
    from urllib.parse import unquote_to_bytes

    eval_py = b"def f(x):\n    return eval(x)\n"
    files = {
        b"bad\xff\xfename.py": eval_py,
        b"\x1b[2Jclear.py": eval_py,
        b"\x1b]0;title\x07.py": eval_py,
        b"[bold]x[red].py": eval_py,
        b"deep_if.c": b"#if 1\n" * 1000 + b"int inner(void) { return 0; }\n" + b"#endif\n" * 1000,
        b"Deep.java": b"".join(b"class C%d { " % i for i in range(500)) + b"void inner() {}" + b"}" * 500,
        b"deep_ns.cpp": b"".join(b"namespace n%d { " % i for i in range(1000))
        + b"int inner() { return 0; }"
        + b"}" * 1000,
        b"deep.py": b"".join(b" " * i + b"class C%d:\n" % i for i in range(600))
        + b" " * 600
        + b"def inner(self):\n"
        + b" " * 601
        + b"pass\n",
    }
    root = os.path.join(os.fsencode(tmp_path), b"hostile")
    os.makedirs(root)
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as out:
            out.write(data)
    report = tmp_path / "r.sarif"
    done = mtpeft_cli(
        "scan", os.fsdecode(root), "--run", run_dir, "--format", "sarif", "--out", report,
        "--threshold", "0,0,0", "--no-progress", "--include-unfamiliar",
    )  # fmt: skip
    assert done.code == 0, done.err
    log = json.loads(report.read_bytes().decode("utf-8"))
    jsonschema.Draft4Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))).validate(log)
    located = {
        unquote_to_bytes(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
        for r in log["runs"][0]["results"]
    }
    assert located == set(files)  # every file analysed, none skipped, each named by its exact bytes
    assert "0 files skipped" in done.err and "\x1b" not in done.err
