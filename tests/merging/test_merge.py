"""`mtpeft merge`: trained LoRA runs into one run that works wherever a trained run does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CODE = [
    "int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }",
    "def add(a, b):\n    return a + b\n",
    "public int size() { return items.length; }",
]


def _merge(sources: tuple[Path, ...], out: Path, method: str, **settings):
    from mtpeft.merging.merge import merge_runs
    from mtpeft.merging.settings import MergeSettings

    return merge_runs(list(sources), MergeSettings(method=method, **settings), out)


def _raw(run_dir: Path):
    """The run without its calibration (a merged run has none, its sources do), for probabilities."""
    from mtpeft.api import Run
    from mtpeft.modeling.build import load_trained

    return Run(load_trained(run_dir, calibrated=False), run_dir)


def _store(run_dir: Path):
    from mtpeft.store import RunStore

    return RunStore(run_dir.resolve().parent.parent / "mtpeft.sqlite")


def _one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


@pytest.fixture(scope="module")
def runs(merge_root: Path) -> Path:
    return merge_root / "ws" / "runs"


@pytest.fixture(scope="module")
def linear_1_0(study_run):
    """The store record of the study's merged arm: its single-task runs merged by linear, weights (1, 0)."""
    run_dir = study_run("merged", ["vulnerability", "complexity"])
    (record,) = [r for r in _store(run_dir).list_runs() if Path(r.run_dir).resolve() == run_dir]
    return record


@pytest.fixture(scope="module")
def ties(sources: tuple[Path, Path], runs: Path) -> Path:
    return _merge(sources, runs / "ties", "ties", density=0.5).run_dir


def test_linear_with_weights_1_0_reproduces_the_first_runs_predictions(sources, linear_1_0) -> None:
    first, _ = sources
    merged, alone = _raw(Path(linear_1_0.run_dir)), _raw(first)
    want = alone.analyze(CODE, tasks=["vulnerability"])
    got = merged.analyze(CODE, tasks=["vulnerability"])
    for ours, theirs in zip(got, want, strict=True):
        assert ours["vulnerability"]["label"] == theirs["vulnerability"]["label"]
        for label, p in theirs["vulnerability"]["probabilities"].items():
            # not bit for bit: peft folds the scaling (alpha / r = 2) into A and B as sqrt(2) each
            assert ours["vulnerability"]["probabilities"][label] == pytest.approx(p, abs=1e-5)
    # The test split too: the same predicted labels, so the same score, through the merge's evaluation.
    trained = json.loads((first / "metrics.test.json").read_text(encoding="utf-8"))["metrics"]
    assert linear_1_0.metrics["test"]["vulnerability"] == trained["vulnerability"]
    assert set(linear_1_0.metrics["test"]) == {"vulnerability", "complexity"}


def test_the_merged_run_records_its_sources_settings_and_no_training_cost(sources, linear_1_0) -> None:
    import hashlib

    run_file = json.loads((Path(linear_1_0.run_dir) / "run.json").read_text(encoding="utf-8"))
    merge = run_file["merge"]
    assert (merge["method"], merge["weights"], merge["density"]) == ("linear", [1.0, 0.0], None)
    ids = [json.loads((s / "run.json").read_text(encoding="utf-8"))["run_id"] for s in sources]
    assert [s["run_id"] for s in merge["sources"]] == ids
    manifest = hashlib.sha256((sources[0] / "best" / "MANIFEST.json").read_bytes()).hexdigest()
    assert merge["sources"][0]["best_manifest_sha256"] == manifest
    assert run_file["run_id"] == linear_1_0.run_id and linear_1_0.details["merge"] == merge
    assert (linear_1_0.status, linear_1_0.mode, linear_1_0.study) == ("finished", "merged", "merging")
    assert linear_1_0.tasks == ["vulnerability", "complexity"]
    assert linear_1_0.cost["train_flops_estimate"] == 0 and linear_1_0.cost["tokens"] == 0
    trained = [json.loads((s / "cost.json").read_text(encoding="utf-8")) for s in sources]
    assert linear_1_0.cost["sources_train_flops_estimate"] == sum(c["train_flops_estimate"] for c in trained)


def test_a_merged_run_loads_evaluates_scans_and_reports(ties, runs, tmp_path, mtpeft_cli) -> None:
    import mtpeft

    run = mtpeft.load(ties, device="cpu")
    answers = run.analyze(CODE)
    assert [set(a) for a in answers] == [{"vulnerability", "complexity"}] * len(CODE)
    assert run.info["calibration"] == "uncalibrated" and run.config.method == "lora"

    evaluated = mtpeft_cli("evaluate", ties, "--no-progress")
    assert evaluated.code == 0, evaluated.err
    assert "vulnerability" in evaluated.out and "complexity" in evaluated.out

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "app.py").write_text("def evaluate(expr):\n    return eval(expr)\n", encoding="utf-8")
    scanned = mtpeft_cli("scan", tree, "--run", ties, "--format", "json", "--include-code", "--no-progress")
    assert scanned.code == 0, scanned.err
    (unit,) = json.loads(scanned.out)["units"]
    assert set(unit["answers"]) == {"vulnerability", "complexity"}
    assert unit["answers"]["vulnerability"]["label"] == run.analyze(unit["code"])["vulnerability"]["label"]

    reported = mtpeft_cli("report", "--workspace", runs.parent, "--out", tmp_path / "report")
    assert reported.code == 0, reported.err
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "tiny-bert / lora merged ties" in report  # its own arm, not mistaken for a trained lora run


def test_a_merged_run_serves(ties) -> None:
    from fastapi.testclient import TestClient

    import mtpeft
    from mtpeft.serve.app import create_app

    run = mtpeft.load(ties, device="cpu")
    with TestClient(create_app({"merged": run}), base_url="http://localhost") as client:
        reply = client.post("/v1/analyze", json={"snippets": CODE})
    assert reply.status_code == 200, reply.text
    for got, want in zip(reply.json()["snippets"], run.analyze(CODE), strict=True):
        for task in ("vulnerability", "complexity"):
            assert got[task]["label"] == want[task]["label"]
            assert got[task]["probability"] == pytest.approx(want[task]["probability"], abs=1e-5)


def test_dare_ties_from_the_command_line_loads_and_calibrate_fits_it(sources, runs, mtpeft_cli) -> None:
    import mtpeft

    out = runs / "dare"
    args = ("merge", *sources, "--method", "dare_ties", "--density", "0.5", "--out", out, "--no-evaluate")
    done = mtpeft_cli(*args, "--no-progress")
    assert done.code == 0, done.err
    assert "the merged run is uncalibrated" in _one_line(done.out)
    assert f"mtpeft calibrate {out}" in _one_line(done.out)
    assert mtpeft.load(out, device="cpu").analyze(CODE[0])["complexity"]["label"]
    calibrated = mtpeft_cli("calibrate", out, "--no-progress")
    assert calibrated.code == 0, calibrated.err
    assert set(mtpeft.load(out, device="cpu").temperatures) == {"vulnerability", "complexity"}


REFUSALS = {
    "prefix": "was trained with method prefix, which cannot be merged: its virtual tokens are no weight",
    "other-base": "on tiny-bert with seed 1 (its random base weights), run",
    "same-task": "task 'vulnerability' is in runs ties and",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_run_and_write_nothing(
    case, sources, prefix_run, other_base_run, ties, runs, mtpeft_cli
) -> None:
    pairs = {
        "prefix": (sources[0], prefix_run),
        "other-base": (sources[0], other_base_run),
        "same-task": (ties, sources[0]),
    }
    before = len(_store(sources[0]).list_runs())
    out = runs / "refused"
    done = mtpeft_cli("merge", *pairs[case], "--method", "linear", "--out", out)
    assert done.code == 2 and REFUSALS[case] in done.err and "Traceback" not in done.err
    assert not out.exists() and len(_store(sources[0]).list_runs()) == before


def test_unequal_ranks_are_refused_except_by_cat(sources, runs, mtpeft_cli) -> None:
    cat = _merge(sources, runs / "cat", "cat").run_dir  # rank 8 + 8
    assert json.loads((cat / "best" / "adapter" / "adapter_config.json").read_text())["r"] == 16
    done = mtpeft_cli("merge", cat, sources[1], "--method", "linear", "--out", runs / "refused")
    assert done.code == 2
    assert "merge method linear needs one LoRA rank, but the runs have cat r=16" in done.err
    assert "Use --method cat" in done.err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--method", "ties"), "merge method ties prunes each module first: give density"),
        (("--method", "avg"), "unknown merge method 'avg'; choose one of: linear, cat, ties"),
        (("--method", "linear", "--weights", "1"), "--weights: 1 weights given for 2 runs"),
        (("--method", "linear", "--density", "0.5"), "merge method linear keeps every entry"),
    ],
)
def test_bad_settings_are_one_error_line(sources, tmp_path, mtpeft_cli, options, message) -> None:
    done = mtpeft_cli("merge", *sources, *options, "--out", tmp_path / "out")
    assert done.code == 2 and message in done.err and "Traceback" not in done.err


def test_runs_trained_through_the_lm_head_merge_and_generate(llama_runs, tmp_path, mtpeft_cli) -> None:
    import mtpeft

    out = llama_runs["clone"].parent / "merged"
    merged = _merge((llama_runs["clone"], llama_runs["repair"]), out, "ties", density=0.5)
    assert set(merged.metrics) == set()  # the sources evaluated no split, so neither does the merge
    run = mtpeft.load(out, device="cpu")
    assert run.generation_tasks == ["clone", "repair"]
    assert isinstance(run.generate("int f(int a) { return a + 1 }", task="repair"), str)
    assert run.compare("int f() {}", "int g() {}", task="clone")["label"] in ("0", "1")
    mixed = mtpeft_cli(
        "merge", llama_runs["clone"], llama_runs["vulnerability"], "--method", "cat", "--out", tmp_path / "x"
    )
    assert mixed.code == 2
    assert "trains tasks through the LM head (formulation instruct or generation) and run" in mixed.err
