"""Report section "Cheap grouping signals vs measured transfer": can one joint run choose the groups?

Per arm with a measured transfer matrix and at least one cheap signal read by its multi-task runs
(lookahead affinity, gradient cosine: study/signals.py): each pair's values side by side, the Spearman
rank correlation of each signal with the mean transfer over the pairs, with a 95% percentile bootstrap
interval over the pairs (study/stats.py), and the grouping each signal proposes (study/grouping.py's
search) against the one the measured transfer proposes, each scored as the study scores a grouping.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

from mtpeft.catalogue import GROUPING_SIGNALS_TRUST

if TYPE_CHECKING:
    from mtpeft.report.build import Context, Section, Table
    from mtpeft.study.analysis import StudyAnalysis
    from mtpeft.study.grouping import GroupScorer, Plan
    from mtpeft.study.records import Arm
    from mtpeft.study.signals import Signal

TITLE = "Cheap grouping signals vs measured transfer"


def _pairs(tasks: list[str], signal: Signal, transfer: Signal) -> tuple[list[float], list[float]]:
    """The signal's and the transfer's value of every pair where both are known (both directions)."""
    xs, ys = [], []
    for a, b in combinations(tasks, 2):
        x, y = signal.pair(a, b), transfer.pair(a, b)
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def _values_table(arm: Arm, tasks: list[str], cheap: dict[str, Signal], transfer: Signal) -> Table:
    from mtpeft.report.build import Table, signed
    from mtpeft.study.signals import signed4

    def cell(value: float | None) -> str:
        return "-" if value is None else signed4(value)

    rows = [
        [a, b, *(cell(s.pair(a, b)) for s in cheap.values()), signed(transfer.pair(a, b))]
        for a, b in combinations(tasks, 2)
    ]
    sources = "; ".join(f"{s.title}: {s.source} ({s.measurements} measurements)" for s in cheap.values())
    return Table(
        f"{arm}: cheap signals beside measured transfer",
        "Per task pair (a, b), each value the mean of its two directions. lookahead affinity: Z[a][b] = 1 - "
        "L_b(after an SGD step on a's gradient alone) / L_b(before), and Z[b][a], averaged over the run's "
        "measurements (positive: a step for one task lowers the other's loss). gradient cosine: between "
        "the two tasks' gradients on the shared module. mean transfer: (T[a][b] + T[b][a]) / 2, each a "
        "task's primary test score trained with the other minus alone. Higher is better in every column; "
        f"'-' where not measured. Cheap signals from: {sources}.",
        ["task a", "task b", *(s.title for s in cheap.values()), "mean transfer"],
        rows,
    )


def _correlation_table(arm: Arm, tasks: list[str], cheap: dict[str, Signal], transfer: Signal) -> Table:
    from mtpeft.report.build import Table
    from mtpeft.study.stats import BOOTSTRAP_RESAMPLES, MIN_PAIRS_FOR_INTERVAL, rank_correlation

    rows = []
    for signal in cheap.values():
        result = rank_correlation(*_pairs(tasks, signal, transfer))
        if result.rho != result.rho:  # NaN
            why = "too few pairs (3 needed)" if result.n < 3 else "undefined (one side constant)"
            rows.append([signal.title, str(result.n), "-", "-", "-", why])
            continue
        span = f"[{result.lo:+.2f}, {result.hi:+.2f}]" if result.lo is not None else "-"
        note = f"{result.undefined_draws} constant resamples left out" if result.undefined_draws else ""
        if result.lo is None:
            note = f"too few pairs for an interval ({MIN_PAIRS_FOR_INTERVAL} needed)"
        rows.append([signal.title, str(result.n), f"{result.rho:+.3f}", span, f"{result.p:.2g}", note])
    return Table(
        f"{arm}: how each cheap signal ranks the pairs",
        "Spearman rank correlation of the signal with the mean measured transfer over the pairs where both "
        "are known: +1 ranks the pairs exactly as the pair runs do, 0 not at all. 95% interval: percentile "
        f"bootstrap over the pairs ({BOOTSTRAP_RESAMPLES} resamples, from {MIN_PAIRS_FOR_INTERVAL} pairs "
        "on); with few pairs it is wide, and an interval that holds 0 leaves the question open.",
        ["signal", "pairs", "Spearman", "95% interval", "p", "note"],
        rows,
    )


def _partition(plan: Plan | None) -> frozenset[frozenset[str]] | None:
    return None if plan is None else frozenset(frozenset(g.tasks) for g in plan.groups)


def _reached(scorer: GroupScorer | None, plan: Plan | None) -> tuple[str, str]:
    """(mean score, how it was scored) of the plan's partition, as the study scores groupings."""
    if scorer is None or plan is None:
        return "-", "-"
    scored = scorer.plan([list(g.tasks) for g in plan.groups])
    sources = {g.source for g in scored.groups}
    if "unknown" in sources:
        return "-", "a group neither run nor estimable from pairs"
    how = "measured" if sources <= {"measured", "single"} else "estimated from pair transfer"
    return f"{scored.mean_score:.3f}", how


def _grouping_table(a: StudyAnalysis, arm: Arm, cheap: dict[str, Signal]) -> Table:
    from mtpeft.report.build import Table
    from mtpeft.study.analysis import measured_scorer
    from mtpeft.study.grouping import in_study_order, propose

    matrix = a.transfer[arm]
    scorer = measured_scorer(a.runs, arm, matrix)
    recommendation = a.grouping.get(arm)
    reference = recommendation.best if recommendation is not None else None
    plans: list[tuple[str, Plan | None]] = [("measured transfer", reference)]
    plans += [(s.title, propose(s.tasks, s.gains).best) for s in cheap.values()]

    def modules(plan: Plan | None) -> str:
        return "-" if plan is None else "; ".join(" + ".join(g.tasks) for g in in_study_order(plan, a.tasks))

    rows = []
    for name, plan in plans:
        same = (
            "-"
            if plan is None or reference is None
            else "yes"
            if _partition(plan) == _partition(reference)
            else "no"
        )
        rows.append(
            [
                name,
                modules(plan),
                "reference" if name == "measured transfer" else same,
                *_reached(scorer, plan),
            ]
        )
    return Table(
        f"{arm}: the grouping each signal proposes",
        "Each signal's partition of the tasks into shared modules (study/grouping.py's search: a task alone "
        "scores 0, in a group the mean signal from its partners; the measured one is the report's "
        "grouping recommendation). same: whether it equals the measured proposal. score reached: the mean "
        "primary test score of that partition as the study scores it (higher is better): measured where "
        "each group was run as such, else estimated from single scores and pair transfers.",
        ["signal", "modules", "same as measured", "score reached", "scored"],
        rows,
    )


def cheap_signals_section(a: StudyAnalysis, ctx: Context) -> Section | None:
    """None unless some arm has both a measured transfer and a cheap signal (the section is left out)."""
    from mtpeft.report.build import Section
    from mtpeft.study.signals import study_signals, transfer_signal

    section = Section(TITLE)
    for arm in a.runs.arms:
        matrix = a.transfer.get(arm)
        if matrix is None or not matrix.as_dict():
            continue
        cheap = study_signals(a.runs, arm)
        if not cheap:
            continue
        tasks = [t for t in a.runs.tasks if t in matrix.tasks]
        transfer = transfer_signal(matrix, "the study's pair runs")
        section.blocks += [
            _values_table(arm, tasks, cheap, transfer),
            _correlation_table(arm, tasks, cheap, transfer),
            _grouping_table(a, arm, cheap),
        ]
    if not section.blocks:
        return None
    section.blocks[:0] = [
        "A joint run can measure cheap signals of which tasks help each other (lookahead affinity, "
        "gradient cosine); measured transfer needs a run per pair. Where a study has both, this section "
        "sets each cheap signal against the measured transfer: how it ranks the pairs, and whether the "
        "grouping it proposes is the measured one and what score that grouping reached.",
        GROUPING_SIGNALS_TRUST,
    ]
    return section
