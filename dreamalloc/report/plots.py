"""Pictures of results: adaptation curves within a trial, and pictures of a heap (timeline, memory map).

Figures are drawn on ``matplotlib.figure.Figure`` objects and saved through the Agg canvas, never through
pyplot: nothing needs a display, no global backend is switched under a user's notebook, and no figure is
left open in pyplot's registry across a long evaluation.

Heap pictures share one colouring: a free cell is light grey, block ``b`` gets ``PALETTE[b % len]``, a
qualitative palette with the greys taken out so a block never looks free. The same block keeps its colour
in every picture of a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FREE_COLOUR = np.array([0.85, 0.85, 0.85])  # light grey, as in Mandal & Rohil's memory map


def _palette() -> np.ndarray:
    """tab20 without its two greys, dark hues first: ids 0..8 differ in hue before shades repeat."""
    c = np.asarray(matplotlib.colormaps["tab20"].colors)  # [20, 3]; pairs (dark, light) of one hue
    c = np.concatenate([c[0::2], c[1::2]])
    return c[np.ptp(c, axis=1) > 0.05]  # drop achromatic entries


PALETTE = _palette()  # [P, 3] RGB in [0, 1]


def block_colours(owner) -> np.ndarray:
    """RGB of each cell: ``owner`` [...] int (negative = free, else block id) -> [..., 3] floats."""
    owner = np.asarray(owner)
    if not np.issubdtype(owner.dtype, np.integer):
        if not np.all(np.equal(np.mod(owner, 1), 0)):
            raise ValueError("owner must hold integer block ids (-1 for a free cell)")
        owner = owner.astype(np.int64)
    rgb = PALETTE[np.mod(owner, len(PALETTE))]
    rgb[owner < 0] = FREE_COLOUR
    return rgb


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path


def plot_adaptation(curves: Mapping[str, Sequence[tuple[float, float, float]]], path: str | os.PathLike,
                    title: str = "", ylabel: str = "return") -> Path:
    """Return by episode index within a trial (x = 1..K), one line per method with its CI band.

    ``curves`` maps a method name to ``[(mean, low, high)]`` per episode index, e.g. from
    ``tables.episode_curve`` or ``tables.compare_curves``. Methods may differ in K.
    """
    if not curves:
        raise ValueError("plot_adaptation needs at least one curve")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, curve in curves.items():
        c = np.asarray(curve, dtype=np.float64).reshape(-1, 3)  # [K, (mean, low, high)]
        x = np.arange(1, len(c) + 1)
        (line,) = ax.plot(x, c[:, 0], marker="o", label=name)
        ax.fill_between(x, c[:, 1], c[:, 2], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish_lines(fig, ax, path, "episode within trial", ylabel, title)


def _finish_lines(fig: Figure, ax, path, xlabel: str, ylabel: str, title: str) -> Path:
    """Labels, grid and legend of a line plot, then the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_recovery(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
                  title: str = "", ylabel: str = "mean reward per decision") -> Path:
    """Reward against decisions since an in-episode switch (how fast each method recovers after a shift): one
    line per method, ``curves[name] = (x, y)`` as from ``report.stats.recovery_curve``; where y holds (mean, low,
    high) triples (across seeds, ``report.tables.compare_recovery``) the interval is drawn as a band."""
    if not curves:
        raise ValueError("plot_recovery needs at least one curve")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, (x, y) in curves.items():
        x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
        (line,) = ax.plot(x, y if y.ndim == 1 else y[:, 0], marker=".", label=name)
        if y.ndim == 2 and np.isfinite(y[:, 1:]).any():
            ax.fill_between(x, y[:, 1], y[:, 2], color=line.get_color(), alpha=0.2, linewidth=0)
    return _finish_lines(fig, ax, path, "decisions since the switch", ylabel, title)


def plot_learning(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[tuple[float, float, float]]]]],
                  path: str | os.PathLike, title: str = "") -> Path:
    """Learning curves: one panel per metric (``curves[metric][label] = (steps, [(mean, low, high)])``, as from
    ``report.learning.learning_curves``), one line per label with its band across seeds, against env steps."""
    if not curves:
        raise ValueError("plot_learning needs at least one curve")
    fig = Figure(figsize=(6.4 * len(curves), 4.0))
    for i, (metric, by_label) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), i + 1)
        for name, (x, c) in by_label.items():
            c = np.asarray(c, dtype=np.float64).reshape(-1, 3)
            (line,) = ax.plot(np.asarray(x), c[:, 0], label=name)
            ax.fill_between(np.asarray(x), c[:, 1], c[:, 2], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"{metric} (training episodes, last 100)")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_title(title, loc="left")
            handles, labels = ax.get_legend_handles_labels()
    fig.subplots_adjust(wspace=0.3)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize="small",
               ncol=max(1, min(len(labels), 2)))  # below the panels: labels can be long
    return _save(fig, path)


def plot_heap_timeline(owner, path: str | os.PathLike, title: str = "") -> Path:
    """Occupancy of one heap over an episode: ``owner`` [T, N] (x = address, y = step, time downward).

    Shows what a number cannot: where an allocator leaves holes and how they persist or coalesce.
    """
    owner = np.asarray(owner)
    if owner.ndim != 2 or owner.size == 0:
        raise ValueError(f"plot_heap_timeline needs owner [T, N], got shape {owner.shape}")
    t, n = owner.shape
    fig = Figure(figsize=(8.0, float(np.clip(2.0 + t / 40, 2.5, 10.0))))
    ax = fig.add_subplot()
    ax.imshow(block_colours(owner), aspect="auto", interpolation="nearest", origin="upper",
              extent=(-0.5, n - 0.5, t - 0.5, -0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("address (cell)")
    ax.set_ylabel("step")
    ax.set_title(title)
    return _save(fig, path)


def _free_runs(row: np.ndarray) -> int:
    free = np.concatenate([[False], row < 0])
    return int(np.count_nonzero(free[1:] & ~free[:-1]))


def plot_memory_map(owner, path: str | os.PathLike, title: str = "", show_stats: bool = True) -> Path:
    """One heap state as a strip (Mandal & Rohil's memory map), or several labelled strips.

    ``owner`` is [N] ints (negative = free, else block id) or a dict label -> [N], e.g. before/after for
    each allocator, drawn top to bottom. With ``show_stats`` each strip is annotated with its free cells
    and number of holes (maximal free runs), the numbers the memory map is usually read for.
    """
    rows = dict(owner) if isinstance(owner, Mapping) else {"": owner}
    if not rows:
        raise ValueError("plot_memory_map needs at least one heap")
    arrs = {k: np.asarray(v) for k, v in rows.items()}
    for k, a in arrs.items():
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"plot_memory_map: heap {k!r} must be a non-empty [N] array, got shape {a.shape}")
    ns = {a.size for a in arrs.values()}
    if len(ns) > 1:
        raise ValueError(f"plot_memory_map: heaps differ in size {sorted(ns)}; draw them separately")
    n = ns.pop()
    grid = np.stack(list(arrs.values()))  # [R, N]
    r = grid.shape[0]
    fig = Figure(figsize=(8.0, 0.9 + 0.55 * r))
    ax = fig.add_subplot()
    ax.imshow(block_colours(grid), aspect="auto", interpolation="nearest",
              extent=(-0.5, n - 0.5, r - 0.5, -0.5))
    if n <= 512:  # white edges between touching blocks, so neighbours of one colour stay two blocks
        for i, a in enumerate(grid):
            edges = np.flatnonzero((a[1:] != a[:-1]) & (a[1:] >= 0) & (a[:-1] >= 0)) + 0.5
            if edges.size:
                ax.vlines(edges, i - 0.5, i + 0.5, colors="white", linewidth=0.8)
    if isinstance(owner, Mapping):
        ax.set_yticks(range(r), [str(k) for k in arrs])
    else:
        ax.set_yticks([])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("address (cell)")
    if show_stats:
        for i, a in enumerate(grid):
            ax.text(n - 0.5 + 0.01 * n, i, f"free {int(np.count_nonzero(a < 0))}/{n}, {_free_runs(a)} holes",
                    va="center", ha="left", fontsize="small", clip_on=False)
    ax.set_title(title)
    return _save(fig, path)
