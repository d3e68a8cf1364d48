"""Report section "Gradient conflict vs transfer": does the cheap signal predict the expensive one?

The cosine between two tasks' gradients on the shared module (`grad_conflict_every`, see
training/grad_conflict.py) costs a copy of the gradients during a run that is trained anyway; the transfer
T[i][j] (study/analysis.py) costs a pair run per pair and a single run per task. Per arm, this section puts
each pair's mean cosine beside its measured transfer and gives their Spearman rank correlation: if it is
high, the cosines of one multi-task run could stand in for the pair runs when choosing groups.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtpeft.report.build import Context, Section, Table
    from mtpeft.store import RunRecord
    from mtpeft.study.analysis import StudyAnalysis, TransferMatrix
    from mtpeft.study.records import Arm, StudyRuns

MIN_PAIRS = 3  # a rank correlation of 2 points is always +1 or -1: meaningless


@dataclass
class PairCosines:
    """One task pair's cosines in one arm: each run's mean, and how many measurements each took."""

    means: list[float] = field(default_factory=list)
    measurements: int = 0

    @property
    def mean(self) -> float:
        return sum(self.means) / len(self.means)  # every run weighs the same, however often it measured


def _summary(record: RunRecord) -> dict[str, Any]:
    return record.details.get("grad_conflict") or {}


def _arm_cosines(runs: StudyRuns, arm: Arm) -> tuple[dict[str, PairCosines], list[str]]:
    """pair key -> its cosines over every multi-task run of the arm; and those runs, named for the caption."""
    pairs: dict[str, PairCosines] = {}
    sources = []
    for group in runs.groups(arm):
        seeds = []
        for seed, record in sorted(runs.runs(arm, group).items()):
            found = _summary(record).get("pairs", {})
            for key, stats in found.items():
                pair = pairs.setdefault(key, PairCosines())
                pair.means.append(float(stats["mean"]))
                pair.measurements += int(stats["n"])
            if found:
                seeds.append(str(seed))
        if seeds:
            sources.append(f"{' + '.join(group)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})")
    return pairs, sources


def _transfer(matrix: TransferMatrix | None, a: str, b: str) -> tuple[float, float]:
    """(T[a][b], T[b][a]); NaN where the pair (or a task's single run) was not run."""
    if matrix is None or a not in matrix.tasks or b not in matrix.tasks:
        return math.nan, math.nan
    i, j = matrix.tasks.index(a), matrix.tasks.index(b)
    return float(matrix.values[i, j]), float(matrix.values[j, i])


def _correlation(cosines: list[float], transfers: list[float]) -> str:
    from scipy.stats import spearmanr

    n = len(cosines)
    if n < MIN_PAIRS:
        return f"too few pairs to correlate ({n} with both a cosine and a transfer; {MIN_PAIRS} needed)"
    with warnings.catch_warnings():  # constant input: scipy warns and returns NaN, said in words below
        warnings.simplefilter("ignore")
        rho, p = (float(x) for x in spearmanr(cosines, transfers))
    if math.isnan(rho):
        return f"undefined over {n} pairs (all cosines or all transfers are equal)"
    return f"{rho:+.3f} over {n} pairs (p = {p:.2g})"


def _arm_table(
    a: StudyAnalysis, arm: Arm, band: float, pair_key: Callable[[str, str], str]
) -> tuple[Table, str] | None:
    from mtpeft.report.build import Table, num, signed

    pairs, sources = _arm_cosines(a.runs, arm)
    if not pairs:
        return None
    # Rows in the study's task order; the stored key is the two names sorted alphabetically.
    ordered = {pair_key(x, y): (x, y) for x, y in combinations(a.runs.tasks, 2)}
    for key in [k for k in pairs if k not in ordered]:  # a task the study does not list: the stored order
        first, _, second = key.partition(" | ")
        ordered[key] = (first, second)
    rows, cosines, transfers = [], [], []
    for key, (first, second) in ordered.items():
        if key not in pairs:
            continue
        cosine = pairs[key].mean
        forward, backward = _transfer(a.transfer.get(arm), first, second)
        both = forward + backward  # NaN unless both directions were measured
        mean_transfer = both / 2 if not math.isnan(both) else None
        verdict = "conflicting" if cosine < -band else "aligned" if cosine > band else "neutral"
        rows.append(
            [first, second, signed(cosine), str(len(pairs[key].means)), str(pairs[key].measurements)]
            + [verdict, signed(forward), signed(backward), signed(mean_transfer)]
        )
        if mean_transfer is not None:
            cosines.append(cosine)
            transfers.append(mean_transfer)
    table = Table(
        f"{arm}: gradient cosine vs measured transfer",
        "Per task pair (a, b). mean cosine: cosine between the two tasks' gradients on the shared module, "
        "averaged over a run's measurements, then over the runs that measured it (every seed and every "
        f"multi-task run of this arm holding both tasks: {'; '.join(sources)}); negative means the tasks "
        "pull the shared module apart. runs: how many runs measured the pair; measurements: their "
        f"measurements together. verdict: conflicting below -{num(band, 2)}, aligned above +{num(band, 2)}, "
        "else neutral (the study's thresholds). T[a][b]: a's primary test score co-trained with b alone "
        "minus a alone (T[b][a] the reverse; higher is better); mean transfer: their mean, '-' unless "
        "both were measured. Spearman correlation below: positive means the cheap signal (cosine) ranks the "
        "pairs like the expensive one (pair runs), so higher cosine goes with better transfer.",
        ["task a", "task b", "mean cosine", "runs", "measurements", "verdict"]
        + ["T[a][b]", "T[b][a]", "mean transfer"],
        rows,
    )
    correlation = _correlation(cosines, transfers)
    return table, f"{arm}: Spearman rank correlation of mean cosine and mean transfer: {correlation}."


def conflict_section(a: StudyAnalysis, ctx: Context) -> Section | None:
    """None when no run measured gradient conflict (the report then leaves the section out)."""
    from mtpeft.report.build import Section

    if not any(_summary(v.record) for v in a.runs.views):
        return None
    # Imported only here: the module imports torch, which the rest of the report never needs.
    from mtpeft.training.grad_conflict import CONFLICT_BAND, pair_key

    section = Section("Gradient conflict vs measured transfer")
    section.blocks.append(
        "Gradient cosines are read during a multi-task run at almost no cost; transfer needs a pair run "
        "per pair. If they rank the pairs alike (positive correlation), the cosines could stand in for the "
        "pair runs when choosing which tasks to train together."
    )
    for arm in a.runs.arms:
        if (found := _arm_table(a, arm, CONFLICT_BAND, pair_key)) is not None:
            section.blocks.extend(found)
    return section
