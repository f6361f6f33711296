"""Learning curves of the Dreamer-RL^2 runs of docs/rl2.md as PNG.

    python scripts/dreamer_rl2_curves.py --out docs/img/dreamer_rl2_bandit10.png --title "bandit n=10" \
        LABEL=RESULT ...

Each RESULT is a ``scripts/rl2_sanity.py --json`` file (its ``curve``: mean trial return of the last 1,000
trials against env steps) or a train.py run folder (its metrics.jsonl: ``train/return``, the mean return of
recent episodes). ``--hline NAME=VALUE`` draws a reference line (a target, a baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(path: Path) -> tuple[list[int], list[float]]:
    if path.is_dir():
        xs, ys = [], []
        for line in (path / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "train/return" in row:
                xs.append(int(row["step"]))
                ys.append(float(row["train/return"]))
        return xs, ys
    data = json.loads(path.read_text())
    if "curve" not in data:
        raise ValueError(f"{path}: no 'curve' (not written by scripts/rl2_sanity.py --json?)")
    return [int(s) for s, _, _ in data["curve"]], [float(m) for _, m, _ in data["curve"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RESULT")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--ylabel", default="mean training return")
    p.add_argument("--hline", nargs="*", default=[], metavar="NAME=VALUE")
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
            xs, ys = curve(Path(path))
            ax.plot(xs, ys, label=label)
        for spec in a.hline:
            name, _, value = spec.partition("=")
            ax.axhline(float(value), ls="--", lw=0.8, color="gray")
            ax.annotate(name, (0, float(value)), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    except (OSError, ValueError) as e:
        print(f"dreamer_rl2_curves: error: {e}", file=sys.stderr)
        return 2
    ax.set_xlabel("env steps")
    ax.set_ylabel(a.ylabel)
    ax.set_title(a.title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
