"""Learning curves across seeds: each run's training metrics (``metrics.jsonl``: ``train/return`` and the family's
per-episode metrics such as ``train/mean_job_time``, means over the last 100 episodes) against env steps, grouped
by (suite, label) like the comparison tables, on a common step grid with a 95 % interval across seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dreamalloc.report.results import Results, label_of, latest_per_run, read_jsonl, run_of
from dreamalloc.report.stats import mean_ci

CI = tuple[float, float, float]


def run_series(run_dir: Path, names: tuple[str, ...] = ("return",)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} of the run's logged ``train/<name>`` scalars, for each of ``names`` it logged."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = read_jsonl(path) if path.is_file() else []
    out: dict[str, list[tuple[int, float]]] = {}
    for line in lines:
        for name in names:
            v = line.get(f"train/{name}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(name, []).append((int(line["step"]), float(v)))
    return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in out.items()}


def learning_curves(found: list[tuple[Path, Results]], metrics: tuple[str, ...] = (), points: int = 50
                    ) -> tuple[dict[str, dict[str, dict[str, tuple[np.ndarray, list[CI]]]]], list[str]]:
    """{suite: {metric: {label: (steps, [(mean, low, high)] per step)}}} over the runs of ``found`` (one per run:
    its latest evaluation names its label, suite and seed) for ``return`` and ``metrics``. Seeds are interpolated
    onto ``points`` steps up to the shortest seed's last logged step; a label whose runs logged nothing is named
    in the returned warnings."""
    warnings: list[str] = []
    runs = latest_per_run(found, warnings)
    groups: dict[tuple[str, str], list[Path]] = {}
    for f, r in runs:
        groups.setdefault((r["suite"], label_of(r)), []).append(run_of(f))
    out: dict[str, dict[str, dict[str, tuple[np.ndarray, list[CI]]]]] = {}
    for (suite, label), dirs in sorted(groups.items()):
        # a curve needs a metric logged at two steps or more
        series = [{k: v for k, v in run_series(d, ("return", *metrics)).items() if len(v[0]) > 1} for d in dirs]
        if not any(series):  # one line, not one per metric: the runs were too short for their logging interval
            warnings.append(f"{suite} {label}: none of its {len(series)} runs logged training metrics at two steps "
                            f"or more (metrics.jsonl; see logger.every), so it has no learning curve")
            continue
        for metric in ("return", *metrics):
            have = [s[metric] for s in series if metric in s]
            if not have:
                warnings.append(f"{suite} {label}: no run logged train/{metric}; no curve of it")
                continue
            if len(have) < len(series):
                warnings.append(f"{suite} {label}: {len(series) - len(have)} of {len(series)} runs logged no "
                                f"train/{metric}; its curve uses the other {len(have)}")
            lo = max(s[0][0] for s in have)
            hi = min(s[0][-1] for s in have)
            grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi], dtype=np.float64)
            ys = np.stack([np.interp(grid, s[0], s[1]) for s in have])  # [seeds, points]
            out.setdefault(suite, {}).setdefault(metric, {})[label] = (grid, [mean_ci(ys[:, j])
                                                                             for j in range(len(grid))])
    return out, warnings


__all__ = ["learning_curves", "run_series"]
