"""Learning curves of the Dreamer-RL^2 runs of docs/rl2.md as PNG.

    python scripts/dreamer_rl2_curves.py --out docs/img/dreamer_rl2_bandit10.png --title "bandit n=10" \
        LABEL=RESULT ...

Each RESULT is a ``scripts/rl2_sanity.py --json`` file (its ``curve``: mean trial return of the last 1,000
trials against env steps) or a train.py run folder (its metrics.jsonl: ``train/return``, the mean return of
recent episodes). ``--series selection`` plots the greedy agent's model-selection scores instead (the JSON's
``selection.history`` from ``--select-every``, a run folder's ``select/return`` lines from
``eval.select_every``). ``--hline NAME=VALUE`` draws a reference line (a target, a baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(path: Path, series: str = "train") -> tuple[list[int], list[float]]:
    """(env steps, values) of one run: the training return or (``series="selection"``) the selection scores."""
    if path.is_dir():
        key = "train/return" if series == "train" else "select/return"
        xs, ys = [], []
        for line in (path / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if key in row:
                xs.append(int(row["step"]))
                ys.append(float(row[key]))
        if not xs:
            raise ValueError(f"{path}: no '{key}' in metrics.jsonl")
        return xs, ys
    data = json.loads(path.read_text())
    if series == "selection":
        history = (data.get("selection") or {}).get("history")
        if not history:
            raise ValueError(f"{path}: no selection scores (run scripts/rl2_sanity.py with --select-every)")
        return [int(s) for s, _ in history], [float(v) for _, v in history]
    if "curve" not in data:
        raise ValueError(f"{path}: no 'curve' (not written by scripts/rl2_sanity.py --json?)")
    return [int(s) for s, _, _ in data["curve"]], [float(m) for _, m, _ in data["curve"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RESULT")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--ylabel", default=None, help="default: says which series")
    p.add_argument("--hline", nargs="*", default=[], metavar="NAME=VALUE")
    p.add_argument("--series", choices=("train", "selection"), default="train",
                   help="the training return (default) or the greedy agent's model-selection scores")
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    try:
        for spec in a.runs:
            label, _, path = spec.partition("=")
            if not path:
                raise ValueError(f"expected LABEL=RESULT, got {spec!r}")
            xs, ys = curve(Path(path), a.series)
            ax.plot(xs, ys, label=label, marker="o" if a.series == "selection" else None, ms=3)
        for spec in a.hline:
            name, _, value = spec.partition("=")
            ax.axhline(float(value), ls="--", lw=0.8, color="gray")
            ax.annotate(name, (0, float(value)), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"dreamer_rl2_curves: error: {e}", file=sys.stderr)
        return 2
    ax.set_xlabel("env steps")
    default_label = "mean training return" if a.series == "train" else "greedy return (selection instances)"
    ax.set_ylabel(a.ylabel or default_label)
    ax.set_title(a.title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
