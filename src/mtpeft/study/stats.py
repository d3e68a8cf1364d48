"""Means over seeds and their 95% confidence intervals, and the rule for which interval a number gets.

- 3 seeds or more: Student-t interval over seeds (seed-to-seed variation is what a reader re-running the
  study would see).
- fewer: percentile bootstrap over the test examples of the per-example prediction files (paired for a
  difference: both systems resampled on the same examples), when both runs scored the same examples;
- otherwise no interval, and the reason is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CI_LEVEL = 0.95
MIN_SEEDS_FOR_T = 3
BOOTSTRAP_RESAMPLES = 1000
# Below it a bootstrap over pairs is mostly resamples of 2 or 3 distinct points: no interval is given.
MIN_PAIRS_FOR_INTERVAL = 5

PerExample = dict[str, list]
Loader = Callable[[int], PerExample | None]  # seed -> that run's per-example predictions


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    lo: float | None = None
    hi: float | None = None
    n_seeds: int = 0
    ci: str = "no data"  # how the interval was made, or why there is none

    @property
    def has_ci(self) -> bool:
        return self.lo is not None and self.hi is not None


def t_interval(values: list[float]) -> tuple[float, float]:
    from scipy import stats as scipy_stats  # imported here: scipy.stats takes a second to import

    arr = np.asarray(values, dtype=float)
    half = scipy_stats.t.ppf((1 + CI_LEVEL) / 2, len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr))
    return float(arr.mean() - half), float(arr.mean() + half)


def _concat(parts: list[PerExample]) -> PerExample:
    keys = set(parts[0])
    return {k: [x for p in parts for x in p[k]] for k in keys}


def same_examples(a: PerExample, b: PerExample) -> bool:
    """Both runs scored the same examples in the same order (checked on ids, else labels, else count)."""
    if "ids" in a and "ids" in b:
        return a["ids"] == b["ids"]
    if "y_true" in a and "y_true" in b:
        return a["y_true"] == b["y_true"]
    sizes = {len(v) for v in (*a.values(), *b.values())}
    return len(sizes) == 1


def score_estimate(by_seed: dict[int, float], metric: str, load: Loader) -> Estimate:
    """Mean over seeds of one score, with its interval."""
    if not by_seed:
        return Estimate(None)
    values = list(by_seed.values())
    mean, n = float(np.mean(values)), len(values)
    if n >= MIN_SEEDS_FOR_T:
        return Estimate(mean, *t_interval(values), n, f"t over {n} seeds")
    parts = [load(seed) for seed in by_seed]
    if all(parts):
        from mtpeft.evaluation.metrics import bootstrap_ci  # scikit-learn: imported when needed

        data = _concat(parts)
        lo, hi = bootstrap_ci([metric], data, n=BOOTSTRAP_RESAMPLES)[metric]
        size = len(next(iter(data.values())))
        return Estimate(mean, lo, hi, n, f"bootstrap over {size} test examples")
    return Estimate(mean, n_seeds=n, ci=f"none: {n} seed(s), no per-example predictions")


def diff_estimate(
    a: dict[int, float], b: dict[int, float], metric: str, load_a: Loader, load_b: Loader
) -> Estimate:
    """a - b, paired by seed; the interval as the module docstring says."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        if a and b:
            return Estimate(
                float(np.mean(list(a.values())) - np.mean(list(b.values()))), ci="none: no common seed"
            )
        return Estimate(None)
    diffs = [a[s] - b[s] for s in seeds]
    mean, n = float(np.mean(diffs)), len(seeds)
    if n >= MIN_SEEDS_FOR_T:
        return Estimate(mean, *t_interval(diffs), n, f"t over {n} paired seeds")
    pairs = [(load_a(s), load_b(s)) for s in seeds]
    if not all(pa and pb for pa, pb in pairs):
        return Estimate(mean, n_seeds=n, ci=f"none: {n} seed(s), no per-example predictions")
    if not all(same_examples(pa, pb) for pa, pb in pairs):
        return Estimate(mean, n_seeds=n, ci="none: the runs scored different test examples")
    from mtpeft.evaluation.metrics import paired_bootstrap_diff

    data_a, data_b = _concat([p[0] for p in pairs]), _concat([p[1] for p in pairs])
    _, lo, hi = paired_bootstrap_diff(metric, data_a, data_b, n=BOOTSTRAP_RESAMPLES)
    size = len(next(iter(data_a.values())))
    return Estimate(mean, lo, hi, n, f"paired bootstrap over {size} test examples")


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho over paired values, with a percentile bootstrap interval over the pairs."""

    rho: float  # NaN when undefined (fewer than 3 pairs, or one side constant)
    p: float
    n: int  # pairs
    lo: float | None = None
    hi: float | None = None
    undefined_draws: int = 0  # resamples whose rho is undefined (one side constant): left out


def rank_correlation(
    x: list[float], y: list[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> RankCorrelation:
    """Spearman's rho of x and y (scipy) and a CI_LEVEL percentile bootstrap over the pairs (from
    MIN_PAIRS_FOR_INTERVAL pairs on; fewer get rho and p alone).

    The bootstrap is a short loop of our own rather than scipy.stats.bootstrap: with a handful of pairs
    many resamples repeat one value on a side, where rho is undefined, and those are left out and
    counted here instead of turning the whole interval into NaN."""
    import warnings

    from scipy.stats import spearmanr

    n = len(x)
    if n < 3:
        return RankCorrelation(float("nan"), float("nan"), n)

    def rho_of(a: np.ndarray, b: np.ndarray) -> float:
        with warnings.catch_warnings():  # constant input: scipy warns and returns NaN
            warnings.simplefilter("ignore")
            return float(spearmanr(a, b).statistic)

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = spearmanr(xs, ys)
    rho, p = float(result.statistic), float(result.pvalue)
    if np.isnan(rho):
        return RankCorrelation(rho, p, n)
    if n < MIN_PAIRS_FOR_INTERVAL:
        return RankCorrelation(rho, p, n)
    rng = np.random.default_rng(seed)
    draws = [rho_of(xs[i], ys[i]) for i in rng.integers(0, n, size=(resamples, n))]
    defined = [d for d in draws if not np.isnan(d)]
    if not defined:
        return RankCorrelation(rho, p, n, undefined_draws=resamples)
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = (float(v) for v in np.percentile(defined, [tail, 100 - tail]))
    return RankCorrelation(rho, p, n, lo, hi, resamples - len(defined))
