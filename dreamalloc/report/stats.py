"""Confidence intervals for the tables: every reported mean carries its 95 % t-interval."""

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
