"""`mtpeft group`: which tasks should share a module, from a run's cheap signal or a study's transfer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mtpeft.catalogue import GROUPING_SIGNALS_TRUST

if TYPE_CHECKING:
    from mtpeft.study.analysis import StudyAnalysis
    from mtpeft.study.grouping import Plan
    from mtpeft.study.records import Arm
    from mtpeft.study.signals import Signal

HELP = (
    "Propose which tasks share a module: a partition of the tasks into at most --max-groups modules, each "
    "printed with the evidence inside it. From a run directory: its lookahead affinity (affinity.json, "
    "`affinity: {every: K}`) or gradient cosines (grad_conflict.json, `grad_conflict_every: K`); from a "
    "study (--workspace, --study): its measured pair transfer (or --signal affinity|cosine from its "
    "multi-task runs). A task alone scores 0; in a group, the mean signal it gets from the others; the "
    "partition with the highest mean over tasks wins (ties: fewer modules), searched exhaustively up to 8 "
    "tasks and greedily above."
)


def _group(
    run_dir: Path | None = typer.Argument(
        None, help="A run directory holding affinity.json or grad_conflict.json; omit to read a study."
    ),
    signal: str | None = typer.Option(
        None,
        help="affinity | cosine | transfer. Default: a run's affinity when it measured any, else its "
        "cosines; a study's measured transfer.",
    ),
    max_groups: int | None = typer.Option(None, "--max-groups", min=1, help="At most G modules."),
    workspace: Path = typer.Option(Path("workspace"), help="Workspace holding mtpeft.sqlite (no RUN_DIR)."),
    study: str | None = typer.Option(None, help="Study name (no RUN_DIR; default: the store's only one)."),
    arm: str | None = typer.Option(
        None, help="With a study: one arm, `MODEL / METHOD` as the report names it, or the method alone."
    ),
    split: str = typer.Option("test", help="With a study: the split whose scores give the transfer."),
) -> None:
    from mtpeft.errors import ConfigError
    from mtpeft.study.signals import KINDS, TRANSFER, run_signal

    if signal is not None and signal not in KINDS:
        raise ConfigError(f"--signal {signal!r}: use one of {', '.join(KINDS)}", field="--signal")
    if run_dir is not None:
        if signal == TRANSFER:
            raise ConfigError(
                "--signal transfer is measured by a study's pair runs, not one run: give --workspace and "
                "--study instead of RUN_DIR",
                field="--signal",
            )
        _print_proposal(run_signal(run_dir, signal), max_groups)
        return
    _group_study(workspace, study, arm, signal or TRANSFER, max_groups, split)


def _group_study(
    workspace: Path, study: str | None, arm: str | None, kind: str, max_groups: int | None, split: str
) -> None:
    from mtpeft.errors import ConfigError
    from mtpeft.report.build import load_records
    from mtpeft.study.analysis import analyse
    from mtpeft.study.signals import TRANSFER, study_signals

    records, study, _ = load_records(workspace, study)
    analysis = analyse(records, study=study, split=split)
    arms = [a for a in analysis.arms if arm is None or arm in (str(a), a.method)]
    if not arms:
        known = "; ".join(str(a) for a in analysis.arms) or "none"
        raise ConfigError(
            f"--arm {arm!r} is not an arm of study {study!r} (its arms: {known})", field="--arm"
        )
    for each in arms:
        if kind == TRANSFER:
            _print_transfer(analysis, each, max_groups)
            continue
        found = study_signals(analysis.runs, each).get(kind)
        if found is None:
            _say(f"{each}: no multi-task run of this arm measured {kind} (see `mtpeft group --help`)")
            continue
        _print_proposal(found, max_groups, heading=f"{each}: ")


def _say(text: str) -> None:
    """One line as written (never wrapped: lines stay greppable), terminal control characters escaped."""
    from mtpeft.report.console import printable

    typer.echo(printable(text))


def _print_proposal(signal: Signal, max_groups: int | None, *, heading: str = "") -> None:
    from mtpeft.study.grouping import propose
    from mtpeft.study.signals import signed4

    proposal = propose(signal.tasks, signal.gains, max_groups)
    measured = f"; {signal.measurements} measurements" if signal.measurements is not None else ""
    _say(f"{heading}{len(signal.tasks)} tasks grouped on {signal.title} from {signal.source}{measured}")
    _say(f"search: {proposal.search}")
    if proposal.best is None:
        _say(
            f"no partition into at most {max_groups} modules rests on measured pairs only; raise "
            "--max-groups or measure the missing pairs"
        )
        return
    _print_groups(signal, proposal.best)
    _say(
        f"mean over tasks of the mean {signal.title} from its partners: {signed4(proposal.best.mean_score)} "
        "(one module per task: 0)"
    )


def _print_groups(signal: Signal, plan: Plan, *, scores: bool = False) -> None:
    from mtpeft.study.grouping import in_study_order
    from mtpeft.study.signals import signed4

    for number, group in enumerate(in_study_order(plan, signal.tasks), 1):
        if len(group.tasks) == 1:
            extra = f" (alone: {next(iter(group.scores.values())):.3f})" if scores else " (alone)"
            _say(f"module {number}: {group.tasks[0]}{extra}")
            continue
        extra = (
            ", ".join(f"{t} {v:.3f}" for t, v in group.scores.items()) + f" ({group.source})"
            if scores
            else f"mean from partners {signed4(sum(group.scores.values()) / len(group.scores))}"
        )
        _say(f"module {number}: {' + '.join(group.tasks)}: {extra}")
        for line in signal.evidence(group.tasks):
            _say(f"    {line}")


def _print_transfer(analysis: StudyAnalysis, arm: Arm, max_groups: int | None) -> None:
    from mtpeft.study.analysis import grouping
    from mtpeft.study.signals import transfer_signal

    matrix = analysis.transfer.get(arm)
    rec = grouping(analysis.runs, arm, matrix, max_groups=max_groups) if matrix is not None else None
    if matrix is None or rec is None:
        _say(
            f"{arm}: no grouping: it needs every task's single-task score and, within "
            f"{max_groups or 'any number of'} modules, measured pairs (task sets `single` and `pairs`)"
        )
        return
    signal = transfer_signal(matrix, f"study {analysis.study or '(all runs)'}")
    _say(f"{arm}: {len(signal.tasks)} tasks grouped on measured transfer from {signal.source}")
    _say(f"search: {rec.search}")
    _print_groups(signal, rec.best, scores=True)
    _say(
        f"mean predicted score {rec.best.mean_score:.4f} (one module per task: "
        f"{rec.all_single.mean_score:.4f}); T[a][b]: a's score with b minus a alone"
    )
    for note in rec.notes:
        _say(note)


def register(app: typer.Typer) -> None:
    app.command("group", help=HELP, epilog=GROUPING_SIGNALS_TRUST)(_group)
