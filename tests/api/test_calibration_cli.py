"""Calibration of a trained run end to end: fitted at the end of training, applied on load, refused when
damaged, absent from old runs (which say so), fitted again by `mtpeft calibrate`, and used by
`scan --precision` / `predict --precision`. Copies of the session's tiny run, never the run itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtpeft.calibration_file import (
    CALIBRATION_DIR,
    CALIBRATION_FILE,
    Calibration,
    read_calibration,
    write_calibration,
)
from mtpeft.errors import DamagedFiles
from mtpeft.evaluation.calibrate_run import fit_task

SNIPPETS = [
    "int copy(char *d, const char *s) { strcpy(d, s); return 0; }",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) s += a[i][j];",
    "public int size() { return items.size(); }",
]


@pytest.fixture
def copy_of(run_dir: Path, tmp_path: Path):
    def make(name: str = "copy", *, calibrated: bool = True) -> Path:
        target = tmp_path / name
        shutil.copytree(run_dir, target)
        if not calibrated:
            shutil.rmtree(target / CALIBRATION_DIR)
        return target

    return make


def test_training_fits_a_temperature_that_lowers_validation_nll(run_dir):
    stored = json.loads((run_dir / CALIBRATION_DIR / CALIBRATION_FILE).read_text(encoding="utf-8"))
    assert stored["split"] == "valid" and stored["ece_bins"] == 15
    assert set(stored["tasks"]) == {"vulnerability", "complexity", "clone"}  # classification and pair
    assert "code-search" in stored["skipped"]
    for task in stored["tasks"].values():
        assert task["nll_after"] <= task["nll_before"]
        assert task["temperature"] > 0


def test_temperature_changes_probabilities_not_labels(run, copy_of):
    import mtpeft

    raw = mtpeft.load(copy_of(calibrated=False), device="cpu")
    assert raw.info["calibration"] == "uncalibrated" and raw.temperatures == {}
    assert run.info["calibration"].startswith("temperature scaling on valid")
    calibrated, uncalibrated = run.analyze(SNIPPETS), raw.analyze(SNIPPETS)
    for mine, theirs in zip(calibrated, uncalibrated, strict=True):
        for task in ("vulnerability", "complexity"):
            assert mine[task]["label"] == theirs[task]["label"]
            t = run.temperatures[task]
            # softmax(z / T) from softmax(z): log p / T, renormalised (softmax ignores a shift per row)
            logp = np.log(list(theirs[task]["probabilities"].values())) / t
            expected = np.exp(logp - logp.max()) / np.exp(logp - logp.max()).sum()
            assert list(mine[task]["probabilities"].values()) == pytest.approx(expected, abs=1e-4)
    pair, pair_raw = run.compare(SNIPPETS[0], SNIPPETS[1:]), raw.compare(SNIPPETS[0], SNIPPETS[1:])
    assert [p["label"] for p in pair] == [p["label"] for p in pair_raw]


def test_damaged_calibration_is_refused_like_best(copy_of, mtpeft_cli, tmp_path):
    import mtpeft

    damaged = copy_of()
    path = damaged / CALIBRATION_DIR / CALIBRATION_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFiles, match=r"calibration\.json: checksum mismatch.*mtpeft calibrate"):
        mtpeft.load(damaged, device="cpu")
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"code": SNIPPETS[0]}) + "\n", encoding="utf-8")
    done = mtpeft_cli("predict", damaged, lines)
    assert done.code == 2 and "calibration/ is damaged" in done.err and "calibration.json" in done.err


def test_calibration_for_another_best_is_refused(copy_of):
    moved = copy_of()
    manifest = moved / "best" / "MANIFEST.json"
    manifest.write_text(manifest.read_text(encoding="utf-8") + " ", encoding="utf-8")  # another best/
    with pytest.raises(DamagedFiles, match="fitted for another best/"):
        read_calibration(moved)


def test_old_run_without_calibration_works_and_says_uncalibrated(copy_of, mtpeft_cli, tmp_path):
    old = copy_of(calibrated=False)
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"code": SNIPPETS[0]}) + "\n", encoding="utf-8")
    done = mtpeft_cli("predict", old, lines)
    assert done.code == 0 and "uncalibrated" in done.err
    assert json.loads(done.out)["predictions"]["vulnerability"]["label"] in ("0", "1")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text(SNIPPETS[1], encoding="utf-8")
    scanned = mtpeft_cli("scan", tree, "--run", old, "--format", "json", "--no-progress")
    report = json.loads(scanned.out)
    assert report["run"]["calibration"] == "uncalibrated"
    assert any("uncalibrated" in note for note in report["notes"])
    refused = mtpeft_cli("scan", tree, "--run", old, "--precision", "0.9")
    assert refused.code == 2 and "uncalibrated" in refused.err and "mtpeft calibrate" in refused.err


def test_calibrate_command_fits_an_existing_run_again(run_dir, copy_of, mtpeft_cli):
    old = copy_of(calibrated=False)
    done = mtpeft_cli("calibrate", old, "--no-progress", "--reliability")
    assert done.code == 0, done.err
    assert "ECE after" in done.out.replace("\n", " ") or "ECE" in done.out
    assert "vulnerability: reliability" in done.out and "not calibrated: code-search" in done.out
    fitted, original = read_calibration(old), read_calibration(run_dir)
    assert fitted is not None and original is not None
    assert fitted.temperatures == pytest.approx(original.temperatures, rel=1e-3)  # same best/, same split


def test_evaluate_reports_ece_before_and_after(copy_of, mtpeft_cli):
    run = copy_of()
    done = mtpeft_cli("evaluate", run, "--no-baselines", "--no-progress")
    assert done.code == 0, done.err
    assert "calibration on test (15 equal-width ECE bins)" in done.out
    written = json.loads((run / "metrics.test.json").read_text(encoding="utf-8"))["calibration"]
    assert set(written) == {"vulnerability", "complexity", "clone"}
    for row in written.values():
        assert row["calibrated"] and {"ece_before", "ece_after", "reliability_after"} <= set(row)


def test_scan_precision_thresholds_reach_the_target_on_validation(run_dir, tmp_path, mtpeft_cli):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.c").write_text(SNIPPETS[0] + "\n\n" + SNIPPETS[2].join(["void f() {", "}"]), encoding="utf-8")
    done = mtpeft_cli(
        "scan", tree, "--run", run_dir, "--precision", "0.9", "--format", "json", "--no-progress"
    )
    assert done.code == 0, done.err
    report = json.loads(done.out)
    cuts = report["thresholds"]["per_task"]
    assert set(cuts) == {"vulnerability", "clone"}  # complexity (multiclass) flags nothing
    calibration = read_calibration(run_dir)
    assert calibration is not None
    for task, cut in cuts.items():
        fitted = calibration.tasks[task]
        probs = np.exp(np.asarray(fitted.logits) / fitted.temperature)
        positive = probs[:, -1] / probs.sum(-1)
        flagged = positive >= cut - 1e-9
        assert (np.asarray(fitted.gold)[flagged] == 1).mean() >= 0.9  # the target, on the split chosen on
    assert any(
        note.startswith("vulnerability: flagged at P(1) >=") and "recall" in note for note in report["notes"]
    )
    for finding in report["findings"]:
        assert finding["level"] == "error" and finding["probability"] >= cuts[finding["task"]]
    both = mtpeft_cli("scan", tree, "--run", run_dir, "--precision", "0.9", "--threshold", "0.9,0.7,0.5")
    assert both.code == 2 and "not both" in both.err


def test_unreachable_precision_is_refused_naming_task_and_best(copy_of, tmp_path, mtpeft_cli):
    run = copy_of()
    # A validation split on which the most confident "vulnerable" answers are all wrong: 1 of 4 positive.
    logits = np.array([[0.0, 3.0], [0.0, 2.0], [0.0, 1.0], [0.0, -1.0]])
    gold = np.array([0, 0, 0, 1])
    task = fit_task(logits, gold, ["0", "1"], "binary")
    write_calibration(run, Calibration("valid", 15, {"vulnerability": task}, {}))
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"code": SNIPPETS[0]}) + "\n", encoding="utf-8")
    done = mtpeft_cli("predict", run, lines, "--precision", "0.5")
    assert done.code == 2
    assert (
        "task 'vulnerability' cannot reach that precision" in done.err and "best reachable: 0.250" in done.err
    )
    reachable = mtpeft_cli("predict", run, lines, "--precision", "0.25")
    assert reachable.code == 0, reachable.err
    assert json.loads(reachable.out)["predictions"]["vulnerability"]["flagged"] is True  # threshold: lowest


def test_serve_flags_answers_for_a_requested_precision(run, copy_of):
    from fastapi.testclient import TestClient

    import mtpeft
    from mtpeft.serve.app import create_app

    raw = mtpeft.load(copy_of(calibrated=False), device="cpu")
    body = {"snippets": SNIPPETS[:2], "pairs": [{"a": SNIPPETS[0], "b": SNIPPETS[3]}], "precision": 0.9}
    with TestClient(create_app({"tiny": run, "old": raw}), base_url="http://localhost") as client:
        reply = client.post("/v1/analyze", json=body)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert set(answer["thresholds"]) == {"vulnerability", "clone"}
        assert answer["thresholds"]["vulnerability"]["precision"] >= 0.9
        cut = answer["thresholds"]["vulnerability"]["threshold"]
        for snippet in answer["snippets"]:
            got = snippet["vulnerability"]
            assert got["flagged"] == (got["probabilities"]["1"] >= cut)
            assert "flagged" not in snippet["complexity"]  # multiclass: nothing to flag
        assert isinstance(answer["pairs"][0]["clone"]["flagged"], bool)
        unreachable = client.post("/v1/analyze", json=body | {"precision": 1.5})
        assert unreachable.status_code == 422 and "at most 1" in unreachable.text
        old = client.post("/v1/analyze", json=body | {"run": "old"})
        assert old.status_code == 422 and "uncalibrated" in old.text
        assert client.get("/v1/tasks").json()["runs"][1]["calibration"] == "uncalibrated"
