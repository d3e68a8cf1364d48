"""Out-of-distribution scores of a trained run end to end: fitted with its calibration, returned by
`analyze` and `predict`, used by `scan` to withhold findings on unfamiliar code, refused when damaged,
absent from older runs (which still scan and say so). Copies of the session's tiny run, never the run."""

from __future__ import annotations

import ast
import json
import random
import shutil
import sysconfig
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mtpeft.calibration_file import CALIBRATION_DIR, NO_OOD, read_calibration, write_calibration
from mtpeft.errors import DamagedFiles
from mtpeft.evaluation.ood import ARRAYS_FILE, SCORES


def _own_test_code(run) -> list[str]:
    """The tiny run's one-snippet tasks' test split: C (vulnerability) and Java (complexity)."""
    from mtpeft.modeling.task_data import resolve_tasks

    tasks = resolve_tasks(run.config)
    return [e.code for name in ("vulnerability", "complexity") for e in tasks[name].examples("test", seed=0)]


def _python_functions(limit: int = 40) -> list[str]:
    """Real Python: functions of the standard library's json package (another language than the run's)."""
    source = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text(encoding="utf-8")
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    return [ast.get_source_segment(source, n) or "" for n in nodes][:limit]


def _random_tokens(run, count: int) -> list[str]:
    rng = random.Random(0)
    size = run.tokenizer.vocab_size
    return [
        run.tokenizer.decode([rng.randrange(size) for _ in range(rng.randint(10, 40))]) for _ in range(count)
    ]


def _auroc(inside: list[float], outside: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([0] * len(inside) + [1] * len(outside), inside + outside))


def _ood_scores(run, codes: list[str]) -> list[float]:
    return [answer["vulnerability"]["ood_score"] for answer in run.analyze(codes)]


def test_ood_score_separates_own_test_split_from_random_tokens_and_python(run):
    assert run.ood is not None and run.info["ood"].startswith(f"{run.ood.score} distance, 95% of valid")
    test = _own_test_code(run)
    answers = run.analyze(test)
    own = [a["vulnerability"]["ood_score"] for a in answers]
    assert all(a["complexity"]["ood_score"] == a["vulnerability"]["ood_score"] for a in answers)
    assert np.mean([a["vulnerability"]["unfamiliar"] for a in answers]) <= 0.25  # 5% of valid, 48 tests
    random_scores, python_scores = (
        _ood_scores(run, _random_tokens(run, 40)),
        _ood_scores(run, _python_functions()),
    )
    assert _auroc(own, random_scores) > 0.9
    assert _auroc(own, python_scores) > 0.9
    # every candidate score, not only the default (the measurement docs/using/calibration.md reports)
    vectors = {
        name: run.ood_vectors(codes, run.ood.limit)
        for name, codes in {"test": test, "python": _python_functions()}.items()
    }
    for score in SCORES:
        assert (
            _auroc(
                list(run.ood.scores(vectors["test"], score)), list(run.ood.scores(vectors["python"], score))
            )
            > 0.9
        )


def test_damaged_ood_statistics_are_refused(run_dir, tmp_path):
    import mtpeft

    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    path = damaged / CALIBRATION_DIR / ARRAYS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFiles, match=r"ood\.npz: checksum mismatch.*mtpeft calibrate"):
        mtpeft.load(damaged, device="cpu")


def _mixed_tree(run, root: Path) -> Path:
    """The run's own C test functions in one file, real Python (another language) in another."""
    from mtpeft.modeling.task_data import resolve_tasks

    tree = root / "tree"
    tree.mkdir()
    c_code = [e.code for e in resolve_tasks(run.config)["vulnerability"].examples("test", seed=0)]
    (tree / "own.c").write_text("\n\n".join(c_code) + "\n", encoding="utf-8")
    (tree / "decoder.py").write_text("\n\n".join(_python_functions(20)) + "\n", encoding="utf-8")
    return tree


def test_scan_reports_other_language_units_as_unfamiliar_notes(run, run_dir, tmp_path, mtpeft_cli):
    tree = _mixed_tree(run, tmp_path)
    every = (
        "--threshold",
        "0,0,0",
        "--no-clones",
        "--format",
        "json",
        "--no-progress",
    )  # every answer a finding
    report = json.loads(mtpeft_cli("scan", tree, "--run", run_dir, *every).out)
    units = report["units"]
    python = {u["id"] for u in units if u["language"] == "python"}
    own = {u["id"] for u in units if u["language"] == "c"}
    unfamiliar = {u["id"] for u in units if "unfamiliar" in u}
    assert python and python <= unfamiliar  # every Python unit
    assert len(own & unfamiliar) <= len(own) // 4  # the run's own code: mostly familiar
    assert report["summary"]["unfamiliar"] == len(unfamiliar)
    assert {f["unit"] for f in report["findings"]} == own - unfamiliar  # no finding on an unfamiliar unit
    assert any("decoder.py" in note and "unlike the training data" in note for note in report["notes"])
    included = json.loads(mtpeft_cli("scan", tree, "--run", run_dir, *every, "--include-unfamiliar").out)
    assert {f["unit"] for f in included["findings"]} == own | python


def test_run_without_ood_statistics_still_scans_and_says_so(run, run_dir, tmp_path, mtpeft_cli):
    import mtpeft

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    calibration = read_calibration(old)
    assert calibration is not None
    write_calibration(old, replace(calibration, ood=None))  # as calibrated before OOD statistics existed
    loaded = mtpeft.load(old, device="cpu")
    assert loaded.ood is None and loaded.info["ood"] == NO_OOD
    assert "ood_score" not in loaded.analyze("int f() { return 0; }")["vulnerability"]
    done = mtpeft_cli("scan", _mixed_tree(run, tmp_path), "--run", old, "--format", "json", "--no-progress")
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["summary"]["unfamiliar"] == 0 and any(NO_OOD in note for note in report["notes"])
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"code": _python_functions(1)[0]}) + "\n", encoding="utf-8")
    fitted = json.loads(mtpeft_cli("predict", run_dir, lines).out)["predictions"]["vulnerability"]
    assert fitted["unfamiliar"] is True and fitted["ood_score"] > run.ood.thresholds[run.ood.score]
    older = mtpeft_cli("predict", old, lines)
    assert "ood_score" not in json.loads(older.out)["predictions"]["vulnerability"] and NO_OOD in older.err


def test_serve_answers_carry_the_ood_score(run):
    from fastapi.testclient import TestClient

    from mtpeft.serve.app import create_app

    test = _own_test_code(run)
    familiar = test[int(np.argmin(_ood_scores(run, test)))]  # most of the test split is; this one surely
    body = {"snippets": [familiar, _python_functions(1)[0]]}
    with TestClient(create_app({"tiny": run}), base_url="http://localhost") as client:
        reply = client.post("/v1/analyze", json=body)
        assert reply.status_code == 200, reply.text
        own, python = (s["vulnerability"] for s in reply.json()["snippets"])
        assert (own["unfamiliar"], python["unfamiliar"]) == (False, True)
        assert python["ood_score"] > own["ood_score"]
        assert client.get("/v1/tasks").json()["runs"][0]["ood"] == run.info["ood"]
