"""Confidence intervals for the tables (every reported mean carries its 95 % t-interval), and the recovery curve
after an in-episode switch from the sums the rollout loop records."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci(x, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval over the samples (as Lim & Maddukuri report)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one sample")
    m = float(x.mean())
    if x.size == 1:
        return m, m, m
    half = float(x.std(ddof=1) / np.sqrt(x.size) * stats.t.ppf((1 + confidence) / 2, x.size - 1))
    return m, m - half, m + half


def welch_ci(a, b, confidence: float = 0.95) -> tuple[float, float, float]:
    """(difference, low, high): mean(a) - mean(b) with Welch's t-interval, for two independent groups of samples
    (e.g. the seeds of two methods: seed i of one has nothing to do with seed i of the other, so no pairing).
    Needs at least 2 samples in each group."""
    a, b = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (a, b))
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_ci needs at least 2 samples in each group, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    d = float(a.mean() - b.mean())
    se2 = va + vb
    if se2 == 0:
        return d, d, d
    df = se2 ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))  # Welch-Satterthwaite
    half = float(np.sqrt(se2) * stats.t.ppf((1 + confidence) / 2, df))
    return d, d - half, d + half


def recovery_curve(total, count, window: int = 8) -> tuple[list[int], list[float]]:
    """Mean reward per step against steps since a switch, averaged over windows of ``window`` steps (bins with
    no decision left out): x = the window's first step, y = its mean reward per decision."""
    total, count = np.asarray(total, dtype=np.float64), np.asarray(count, dtype=np.float64)
    xs, ys = [], []
    for lo in range(0, len(total), window):
        n = count[lo: lo + window].sum()
        if n > 0:
            xs.append(lo)
            ys.append(float(total[lo: lo + window].sum() / n))
    return xs, ys
