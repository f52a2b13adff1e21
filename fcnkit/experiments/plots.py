"""Plot helpers of the experiments: curves over seeds as mean +- std bands, and bar charts.

matplotlib is used through its object API with the Agg canvas chosen here (``Figure`` +
``FigureCanvasAgg``), so importing or plotting never changes the process's global backend.
Curves of several seeds rarely share their x values (wall time differs per run), so each seed's
curve is interpolated onto one grid over the x range that EVERY seed covers, then averaged::

    seed 0   x: 0 ..... 9.8 s          grid: 0 .. min(9.8, 10.4, 9.1) s, 100 points
    seed 1   x: 0 ....... 10.4 s       mean and std of the interpolated values per grid point
    seed 2   x: 0 ... 9.1 s
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["new_figure", "seed_band", "smooth", "bars", "save"]


def new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """``(figure, axes array [rows, cols])`` on an Agg canvas; ``figure.savefig(path)`` writes a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(np.asarray(fig.subplots(rows, cols, squeeze=False)))
    return fig, axes


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing running mean over ``window`` values (the first ones over what exists so far)."""
    y = np.asarray(values, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    cumulative = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (cumulative[idx] - cumulative[lo]) / (idx - lo)


def seed_band(
    ax,
    curves: Sequence[tuple[Sequence[float], Sequence[float]]],
    label: str,
    color=None,
    points: int = 100,
    marker: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Plot the mean of ``curves`` (one ``(x, y)`` per seed) with a +- std band; returns ``(grid, mean, std)``.

    Seeds with identical x (e.g. iterations) are averaged point by point; otherwise on a grid of
    ``points`` values over the shared x range.
    """
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        return None
    same_x = all(len(x) == len(curves[0][0]) and np.array_equal(x, curves[0][0]) for x, _ in curves)
    if same_x:
        grid = curves[0][0]
        ys = np.stack([y for _, y in curves])
    else:
        lo = max(x.min() for x, _ in curves)
        hi = min(x.max() for x, _ in curves)
        if hi <= lo:
            hi = lo
        grid = np.linspace(lo, hi, points if hi > lo else 1)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean = ys.mean(0)
    std = ys.std(0, ddof=1) if len(ys) > 1 else np.zeros_like(mean)
    (line,) = ax.plot(grid, mean, label=f"{label} (n={len(curves)})", color=color, marker=marker, markersize=3)
    ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return grid, mean, std


def bars(ax, groups: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str) -> None:
    """Grouped bars: ``series[name] = (means per group, stds per group)``; error bars are +- std."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (name, (means, stds)) in enumerate(series.items()):
        m = np.array([np.nan if v is None else v for v in means], float)
        s = np.array([0.0 if v is None else v for v in stds], float)
        ax.bar(x + (i - (n - 1) / 2) * width, m, width, yerr=s, capsize=3, label=name)
    ax.set_xticks(x, list(groups))
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG to ``path`` (the caller makes it atomic)."""
    fig.savefig(path, dpi=dpi, format="png")
