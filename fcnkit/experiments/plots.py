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

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["new_figure", "panel_row", "seed_band", "smooth", "bars", "mean_std_lists", "save"]


def new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """``(figure, axes array [rows, cols])`` on an Agg canvas; ``figure.savefig(path)`` writes a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(np.asarray(fig.subplots(rows, cols, squeeze=False)))
    return fig, axes


def panel_row(
    blocks: Mapping[str, dict],
    path: str | Path,
    draw: Callable[[Any, str, dict], None],
    size: tuple[float, float] = (5.0, 3.6),
) -> None:
    """One figure, one panel per ``blocks`` item (an experiment's datasets), side by side:
    ``draw(ax, name, block)`` fills each; the figure is saved as a PNG to ``path``."""
    fig, axes = new_figure(1, len(blocks), size=size)
    for ax, (name, block) in zip(axes[0], blocks.items()):
        draw(ax, name, block)
    save(fig, path)


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
    arrays = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not arrays:
        return None
    first_x = arrays[0][0]
    if all(len(x) == len(first_x) and np.array_equal(x, first_x) for x, _ in arrays):
        grid = first_x
        ys = np.stack([y for _, y in arrays])
    else:
        lo = max(x.min() for x, _ in arrays)
        hi = min(x.max() for x, _ in arrays)
        if hi <= lo:
            hi = lo
        grid = np.linspace(lo, hi, points if hi > lo else 1)
        ys = np.stack([np.interp(grid, x, y) for x, y in arrays])
    mean = ys.mean(0)
    std = ys.std(0, ddof=1) if len(ys) > 1 else np.zeros_like(mean)
    (line,) = ax.plot(grid, mean, label=f"{label} (n={len(arrays)})", color=color, marker=marker, markersize=3)
    ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return grid, mean, std


def bars(
    ax,
    groups: Sequence[str],
    series: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]],
    ylabel: str,
) -> None:
    """Grouped bars: ``series[name] = (means per group, stds per group)``; error bars are +- std
    (a missing mean leaves its bar out, a missing std draws none)."""
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


def mean_std_lists(stats: Iterable[Mapping[str, Any]]) -> tuple[list[float | None], list[float | None]]:
    """``mean_std`` dicts -> ``(means, stds)``, one series of :func:`bars`."""
    stats = list(stats)
    return [s["mean"] for s in stats], [s["std"] for s in stats]


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG to ``path`` (the caller makes it atomic)."""
    fig.savefig(path, dpi=dpi, format="png")
