"""A study's `merges`: its single-task runs merged into a merged arm after training, at no training cost,
made once, and set beside the single and multi-task runs in the report."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_study_merges_its_single_task_runs_after_training_them(study_outcomes) -> None:
    statuses = sorted(o.status for o in study_outcomes)
    assert statuses == ["merged", "trained", "trained", "trained"]  # 2 single-task runs, 1 of both
    (merged,) = [o for o in study_outcomes if o.status == "merged"]
    assert merged.name == "merging-tiny-bert-lora-s0-merged-linear-w1_0"


def test_running_the_study_again_skips_the_merge_too(merging_study, study_outcomes) -> None:
    from mtpeft.study.runner import run_study

    again = run_study(merging_study, progress=False)
    assert [o.status for o in again] == ["skipped"] * 4


def test_merges_need_the_single_task_runs(merging_study) -> None:
    from mtpeft.errors import ConfigError
    from mtpeft.study.spec import parse_study

    data = merging_study.model_dump(mode="json")
    data["grid"]["task_sets"] = ["all"]
    data.pop("grids")
    with pytest.raises(ConfigError, match="`merges` merge the grid's single-task runs: add `single`"):
        parse_study(data)


def test_the_report_sets_the_merged_arm_beside_single_and_multi(merge_root, study_outcomes, tmp_path) -> None:
    from mtpeft.report.build import MERGED_TITLE, build_report
    from mtpeft.store import RunStore

    files = build_report(merge_root / "ws", tmp_path / "report", study="merging")
    report = files.markdown.read_text(encoding="utf-8")
    section = report[report.index(MERGED_TITLE) :]
    section = section[: section.index("\n## ")]
    store = RunStore(merge_root / "ws" / "mtpeft.sqlite")
    runs = {(r.mode, tuple(r.tasks)): r for r in store.list_runs(study="merging")}
    merged = runs[("merged", ("vulnerability", "complexity"))]
    single = runs[("single", ("vulnerability",))]
    multi = runs[("multi", ("vulnerability", "complexity"))]
    # Weights (1, 0): the merged arm scores vulnerability as its single-task run did.
    row = next(line for line in section.splitlines() if "| vulnerability |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    accuracy = single.metrics["test"]["vulnerability"]["accuracy"]
    assert cells[:3] == ["tiny-bert / lora merged linear", "vulnerability", "accuracy"]
    assert cells[3] == cells[6] == f"{accuracy:.3f}"  # single, merged
    assert cells[4] == f"{multi.metrics['test']['vulnerability']['accuracy']:.3f}"
    assert cells[5] == "-"  # no full fine-tuning in this study
    assert cells[7].startswith("+0.000 [+0.000, +0.000]")
    # Cost: the merge trains nothing; the arm's training is its single-task runs'.
    flops = next(line for line in section.splitlines() if line.startswith("| train FLOPs"))
    singles = sum(
        runs[("single", (t,))].cost["train_flops_estimate"] for t in ("vulnerability", "complexity")
    )
    assert [c.strip() for c in flops.strip("|").split("|")][1:3] == [f"{singles:.2e}", "0.00e+00"]
    assert merged.cost["train_flops_estimate"] == 0
    assert Path(merged.run_dir).is_dir()


def test_time_estimates_ignore_merged_runs(merge_root, study_outcomes) -> None:
    """A merge's wall time is no training time: the dry run's throughput comes from trained runs only."""
    from mtpeft.store import RunStore
    from mtpeft.study.estimate import measured_throughput

    records = RunStore(merge_root / "ws" / "mtpeft.sqlite").list_runs(study="merging")
    throughput = measured_throughput(records, "tiny-bert", "lora")
    assert throughput is not None and throughput.source.startswith("3 finished tiny-bert/lora run(s)")
