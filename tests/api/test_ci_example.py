"""examples/ci/github-code-scanning.yml: valid YAML that wires the scan to the upload, and its scan
command, taken from the file, run for real on a packed-and-unpacked tiny run, giving a SARIF log that
validates against the 2.1.0 schema. GitHub Actions itself is not run (no network in CI)."""

from __future__ import annotations

import json
import os
import shlex
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "ci" / "github-code-scanning.yml"
SCHEMA_FILE = ROOT / "tests" / "scan" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def step_named(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in steps(workflow) if step.get("name") == name)


def test_the_workflow_trains_nothing_and_uploads_what_the_scan_writes(workflow):
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    assert {"push", "pull_request"} <= set(workflow[True])
    assert workflow["permissions"]["security-events"] == "write"  # upload-sarif needs it
    commands = "\n".join(step.get("run", "") for step in steps(workflow))
    assert "mtpeft train" not in commands and "download.pytorch.org/whl/cpu" in commands
    scan = shlex.split(step_named(workflow, "Scan")["run"])
    upload = step_named(workflow, "Upload to code scanning")
    assert upload["uses"].startswith("github/codeql-action/upload-sarif@")
    assert scan[scan.index("--format") + 1] == "sarif"
    assert upload["with"]["sarif_file"] == scan[scan.index("--out") + 1]


def pack_and_unpack(run_dir: Path, tmp_path: Path) -> Path:
    """The run as examples/ci/README.md packs it (no checkpoints, no predictions), unpacked elsewhere
    as the workflow does (`tar -xzf ... --strip-components=1`)."""
    archive = tmp_path / "mtpeft-run.tar.gz"
    left_out = {"checkpoints", "predictions"}

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if left_out & set(Path(member.name).parts[1:2]) else member

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name, filter=keep)
    unpacked = tmp_path / "runner-temp" / "mtpeft-run"
    unpacked.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            member.name = "/".join(Path(member.name).parts[1:])
            if member.name:
                tar.extract(member, unpacked, filter="data")
    assert not (unpacked / "predictions").exists() and (unpacked / "best").is_dir()
    return unpacked


def test_the_scan_step_gives_a_schema_valid_sarif_log(workflow, run_dir, tmp_path, monkeypatch, mtpeft_cli):
    checkout = tmp_path / "checkout"
    (checkout / "src").mkdir(parents=True)
    (checkout / "src" / "app.py").write_text("def evaluate(expr):\n    return eval(expr)\n", encoding="utf-8")
    (checkout / "README.md").write_text("# a repository to scan\n", encoding="utf-8")
    monkeypatch.setenv("RUN_DIR", str(pack_and_unpack(run_dir, tmp_path)))
    monkeypatch.chdir(checkout)
    # The step's shell command, with its variables expanded as bash would (no other shell syntax in it).
    command = step_named(workflow, "Scan")["run"].strip()
    assert "\n" not in command and not set(";|&`") & set(command), command
    argv = shlex.split(os.path.expandvars(command))
    assert argv[:2] == ["mtpeft", "scan"]
    # Every unit a finding, so the log has results; the tiny run never saw code like this (it learnt
    # templated fixtures): --include-unfamiliar keeps its findings.
    done = mtpeft_cli(*argv[1:], "--threshold", "0,0,0", "--include-unfamiliar")
    assert done.code == 0, done.err
    log = json.loads((checkout / argv[argv.index("--out") + 1]).read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))).validate(log)
    results = log["runs"][0]["results"]
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results} == {
        "src/app.py"
    }
