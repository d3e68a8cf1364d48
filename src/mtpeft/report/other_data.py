"""Report section "Out-of-distribution and calibration on other data": per evaluation of a classification
task on other data (`mtpeft evaluate RUN --data TASK=PATH`), whether the run's probabilities, its
validation thresholds and its out-of-distribution score still hold there (mtpeft.evaluation.other_data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtpeft.evaluation.calibration import ECE_BINS
from mtpeft.evaluation.ood import SHARE
from mtpeft.evaluation.other_data import CALIBRATION, OOD, PRECISION, skipped_notes

if TYPE_CHECKING:
    from mtpeft.report.build import Context, Section
    from mtpeft.store import EvaluationRecord, RunRecord
    from mtpeft.study.analysis import StudyAnalysis

TITLE = "Out-of-distribution and calibration on other data"
COLUMNS = [
    "run",
    "task",
    "data",
    "n",
    "ECE (T = 1)",
    "ECE (run's T)",
    "target precision",
    "validation threshold",
    "precision reached [exact 95% CI]",
    "recall reached",
    "OOD AUROC own test vs data",
    "beyond OOD threshold: own test / data",
]
CAPTION = (
    "Per evaluation of a classification task on other data. ECE: expected calibration error of the "
    f"top-label probability ({ECE_BINS} equal-width bins), at T = 1 and at the temperature the run fitted "
    "on its validation split; lower is better. target precision, validation threshold: the smallest "
    "threshold on P(positive) whose validation precision reaches the target (binary and pair tasks; what "
    "`mtpeft scan --precision` flags at); precision and recall reached: at that threshold on the evaluated "
    "data, the precision with its exact Clopper-Pearson 95% interval. OOD AUROC: how well the run's default "
    "out-of-distribution score tells the evaluated data's snippets (positive) from those of the run's own "
    "test split (1 = always, 0.5 = chance); beyond threshold: the share of each above the threshold that "
    f"keeps {SHARE:.0%} of the run's validation snippets inside."
)


def _num(value: float | None) -> str:
    from mtpeft.report.build import num

    return num(value)


def _calibration_cells(part: dict[str, Any]) -> list[str]:
    if not part or "ece_before" not in part:
        return ["-", "-"]
    after = (
        f"{part['ece_after']:.3f} (T = {part['temperature']:.3g})" if part["calibrated"] else "uncalibrated"
    )
    return [_num(part["ece_before"]), after]


def _precision_cells(part: dict[str, Any]) -> list[str]:
    if not part or "reachable" not in part:
        return ["-", "-", "-", "-"]
    target = f"{part['target']:g}"
    if not part["reachable"]:
        return [target, f"unreachable (best {part['best_reachable']:.3f} on {part['split']})", "-", "-"]
    ci = part["precision_ci"]
    reached = f"{part['precision']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "nothing flagged"
    counted = f"{reached} ({part['flagged']} flagged)"
    return [target, f"{part['threshold']:.4f}", counted, _num(part["recall"])]


def _ood_cells(part: dict[str, Any]) -> list[str]:
    if not part or "scores" not in part:
        return ["-", "-"]
    default = part["scores"][part["default"]]
    shares = f"{default['own_beyond']:.1%} / {default['other_beyond']:.1%}"
    return [f"{_num(default['auroc'])} ({part['default']})", shares]


def _row(record: RunRecord, e: EvaluationRecord) -> list[str]:
    cells = [f"{record.name} ({record.run_id[:8]})", e.task, e.data_path, str(e.n_examples)]
    cells += _calibration_cells(e.details.get(CALIBRATION) or {})
    cells += _precision_cells(e.details.get(PRECISION) or {})
    return cells + _ood_cells(e.details.get(OOD) or {})


def other_data_section(a: StudyAnalysis, ctx: Context) -> Section | None:
    """None where no run of the report was evaluated on other data (the section before says how to)."""
    from mtpeft.report.build import Section, Table

    by_id = {r.run_id: r for r in a.runs.records}
    evaluations = [e for e in ctx.evaluations if e.run_id in by_id]
    if not evaluations:
        return None
    measured = [e for e in evaluations if e.details]
    if not measured:
        return Section(
            TITLE,
            [
                "None of these evaluations holds calibration, precision or OOD measurements: they were "
                "recorded before mtpeft took them, or their tasks are not classification tasks. Evaluate "
                "again with `mtpeft evaluate RUN_DIR --data TASK=PATH` to add them."
            ],
        )
    table = Table(TITLE, CAPTION, COLUMNS, [_row(by_id[e.run_id], e) for e in measured])
    notes = [
        f"{by_id[e.run_id].name}, {e.task} on {e.data_path}: {note}"
        for e in measured
        for note in skipped_notes(e.details)
    ]
    return Section(TITLE, [table, *notes])
