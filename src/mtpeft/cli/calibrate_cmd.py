"""`mtpeft calibrate RUN_DIR`: fit (or fit again) a run's temperature scaling on its validation split.

Training does this at its end; this command is for runs trained before calibration existed, and for a
calibration/ folder that was damaged or removed. It writes RUN_DIR/calibration/ (mtpeft.calibration_file)
and prints, per task, the temperature and the NLL and ECE before and after, then each task's reliability
bins (with --reliability), and the out-of-distribution statistics' threshold (mtpeft.evaluation.ood).
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)


def calibrate(
    run_dir: Path = typer.Argument(..., help="A trained run directory (workspace/runs/...)."),
    reliability: bool = typer.Option(
        False, "--reliability", help="Also print each task's reliability bins (confidence vs accuracy)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fit one temperature per classification task on the run's validation split; store it with the run.

    Every later use of the run (analyze, compare, predict, scan, serve, evaluate) then gives calibrated
    probabilities; labels do not change.
    """
    from mtpeft import layout
    from mtpeft.calibration_file import NO_OOD, calibration_dir
    from mtpeft.evaluation.calibrate_run import calibrate_run
    from mtpeft.modeling.build import read_heads_meta
    from mtpeft.report.console import calibration_table, console, plain, reliability_table

    read_heads_meta(run_dir / layout.BEST_DIR)  # one clear error when there is no trained model
    calibration = calibrate_run(run_dir, progress=progress)
    assert calibration is not None  # one process: it is the main one
    scores = {n: task.scores | {"temperature": task.temperature} for n, task in calibration.tasks.items()}
    title = f"{run_dir.name}: temperature scaling on {calibration.split} ({calibration.bins} ECE bins)"
    console.print(calibration_table(title, scores))
    for name, why in calibration.skipped.items():
        console.print(plain(f"not calibrated: {name} ({why})"))
    if reliability:
        for name, row in scores.items():
            console.print(reliability_table(name, row))
    ood = calibration.ood.describe() if calibration.ood is not None else f"{NO_OOD} (no one-snippet task)"
    console.print(plain(f"out-of-distribution: {ood}"))
    console.print(plain(f"written to {calibration_dir(run_dir)}"))
