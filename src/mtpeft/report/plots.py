"""The report's figures as PNG bytes (matplotlib, Agg; `Figure` objects, so no pyplot global state)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 100


@dataclass(frozen=True)
class Bar:
    panel: str  # one subplot per panel (e.g. model / method)
    setting: str  # one colour per setting (e.g. "single", "all tasks")
    task: str
    mean: float
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Point:
    label: str
    series: str  # one colour per series (arm)
    costs: dict[str, float]  # cost key -> value; one panel per key
    score: float


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)  # constrained layout: no second "tight" draw
    return buffer.getvalue()


MIN_COLOUR_RANGE = 0.05  # the heatmap's colours span at least -0.05 .. +0.05


def transfer_heatmap(tasks: list[str], values: np.ndarray, title: str) -> bytes:
    """T[i][j] with its number in every cell; blue = co-training helped row task i, red = it hurt."""
    n = len(tasks)
    fig = Figure(figsize=(2.4 + 1.0 * n, 1.8 + 0.85 * n), layout="constrained")
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    # Scores live in [0, 1]: a colour range narrower than MIN_COLOUR_RANGE would paint differences of a
    # few thousandths (noise at usual test-set sizes) as deep red or blue.
    limit = max(float(np.abs(finite).max()) if finite.size else 0.0, MIN_COLOUR_RANGE)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")  # grey: diagonal, pairs not run
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto"
    )
    for i in range(n):
        for j in range(n):
            value = values[i, j]
            text = "n/a" if i != j and not np.isfinite(value) else ("" if i == j else f"{value:+.3f}")
            strong = np.isfinite(value) and abs(value) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if strong else "black")
    ax.set_xticks(range(n), tasks, rotation=30, ha="right")
    ax.set_yticks(range(n), tasks)
    ax.set_xlabel("co-trained with task j")
    ax.set_ylabel("scored task i")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="T[i][j] (higher: j helps i)")
    return _png(fig)


def score_cost_scatter(points: list[Point], *, cost_axes: dict[str, str], score_label: str) -> bytes:
    """One panel per cost (key -> axis label); a point per plan, one colour per series."""
    fig = Figure(figsize=(1.0 + 4.6 * len(cost_axes), 4.2), layout="constrained")
    axes = fig.subplots(1, len(cost_axes), sharey=True, squeeze=False)[0]
    series = list(dict.fromkeys(p.series for p in points))
    colours = matplotlib.colormaps["tab10"]
    for ax, (key, label) in zip(axes, cost_axes.items(), strict=True):
        for k, name in enumerate(series):
            mine = [p for p in points if p.series == name and p.costs.get(key)]
            xs, ys = [p.costs[key] for p in mine], [p.score for p in mine]
            ax.scatter(xs, ys, s=60, color=colours(k % 10), label=name)
            for p, x, y in zip(mine, xs, ys, strict=True):
                ax.annotate(p.label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        values = [p.costs[key] for p in points if p.costs.get(key)]
        if values and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.margins(x=0.25, y=0.12)  # room for the point labels
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(score_label)
    if series:
        axes[0].legend(fontsize=8)
    return _png(fig)


def _whiskers(bar: Bar) -> list[float]:
    # Clamped at 0: a bootstrap interval need not contain a mean read back from the store.
    if bar.lo is None or bar.hi is None:
        return [0.0, 0.0]
    return [max(bar.mean - bar.lo, 0.0), max(bar.hi - bar.mean, 0.0)]


def task_bars(bars: list[Bar], *, title: str, score_label: str) -> bytes:
    """One panel per arm; in each, a group of bars per task and a bar per setting; 95% CI whiskers."""
    panels = list(dict.fromkeys(b.panel for b in bars))
    tasks = list(dict.fromkeys(b.task for b in bars))
    settings = list(dict.fromkeys(b.setting for b in bars))
    width = 0.8 / max(len(settings), 1)
    fig = Figure(figsize=(1.0 + (0.6 + 0.9 * len(tasks)) * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, panel in zip(axes, panels, strict=True):
        for k, setting in enumerate(settings):
            mine = {b.task: b for b in bars if b.setting == setting and b.panel == panel}
            xs = [i + (k - (len(settings) - 1) / 2) * width for i, t in enumerate(tasks) if t in mine]
            shown = [mine[t] for t in tasks if t in mine]
            errors = np.array([_whiskers(b) for b in shown]).T if shown else None
            heights = [b.mean for b in shown]
            ax.bar(xs, heights, width, yerr=errors, capsize=3, label=setting, color=colours(k % 10))
        ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
        ax.set_title(panel, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(score_label)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


@dataclass(frozen=True)
class Curve:
    panel: str  # one subplot per task
    series: str  # one colour per arm
    xs: list[float]  # cumulative training compute
    valid: list[float]
    test: list[float] | None  # None: the run did not score test at each validation
    baseline: float | None  # TF-IDF on the same task: a horizontal line


def budget_curves(curves: list[Curve], *, x_label: str, title: str) -> bytes:
    """One panel per task: score against training compute, valid dashed, test solid, TF-IDF dotted grey."""
    panels = list(dict.fromkeys(c.panel for c in curves))
    series = list(dict.fromkeys(c.series for c in curves))
    fig = Figure(figsize=(1.0 + 3.6 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, panel in zip(axes, panels, strict=True):
        for curve in (c for c in curves if c.panel == panel):
            colour = colours(series.index(curve.series) % 10)
            ax.plot(curve.xs, curve.valid, "--o", color=colour, markersize=3, label=f"{curve.series} valid")
            if curve.test is not None:
                ax.plot(curve.xs, curve.test, "-o", color=colour, markersize=3, label=f"{curve.series} test")
        baseline = next((c.baseline for c in curves if c.panel == panel and c.baseline is not None), None)
        if baseline is not None:
            ax.axhline(baseline, color="grey", linestyle=":", label="TF-IDF (test)")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("primary score (higher is better)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
