"""Is an in-episode shift suite a real test, and how much of it does a method close? Oracle vs best fixed rule.

    python scripts/oracle_gap.py RUN_DIR_OR_RESULTS_JSON ... [--markdown]

For every held-out set of each evaluation (its largest step) whose tasks report the switching oracle (streams that
switch task inside an episode, e.g. suite shift_rules), prints: the method's mean return, the hindsight-best fixed
rule's, the switching oracle's (95 % t-intervals over trials), ``oracle_gain``: (oracle - best) / |best| (the
suite is a real test when it is >= 10 % on every set), ``vs_best``: the paired difference method - best rule with its
interval, and ``gap_closed``: (method - best) / (oracle - best), the share of the oracle's advantage the method
recovers (1: as good as the oracle; < 0: worse than the best fixed rule). Exit status 2 with one message on a user
error.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dreamalloc.report.results import find_results, label_of, latest_per_run
from dreamalloc.report.stats import mean_ci
from dreamalloc.report.tables import markdown_table

COLUMNS = ["label", "seed", "step", "set", "trials", "return", "best_rule", "best", "oracle", "oracle_gain", "vs_best",
           "gap_closed"]


def gap_rows(results: dict) -> list[dict]:
    rows = []
    for set_name, s in results["sets"].items():
        tasks = [t for t in s["tasks"].values() if "switching_oracle" in t]
        if not tasks:
            continue
        agent = np.concatenate([np.asarray(t["returns"], float).mean(1) for t in tasks])
        best = np.concatenate([np.asarray(t["hindsight_best"]["returns"], float).mean(1) for t in tasks])
        oracle = np.concatenate([np.asarray(t["switching_oracle"]["returns"], float).mean(1) for t in tasks])
        b, o, a = best.mean(), oracle.mean(), agent.mean()
        rows.append({"label": label_of(results), "seed": results["seed"], "step": results["step"], "set": set_name,
                     "trials": len(agent), "return": mean_ci(agent),
                     "best_rule": "/".join(sorted({t["hindsight_best"]["rule"] for t in tasks})),
                     "best": mean_ci(best), "oracle": mean_ci(oracle),
                     "oracle_gain": f"{(o - b) / abs(b):.1%}" if b else "n/a", "vs_best": mean_ci(agent - best),
                     "gap_closed": f"{(a - b) / (o - b):.2f}" if o != b else "n/a"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="run dirs, folders of runs, or results.json files")
    ap.add_argument("--markdown", action="store_true", help="print only the markdown table")
    args = ap.parse_args(argv)
    try:
        rows = [r for _, res in latest_per_run(find_results(args.paths)) for r in gap_rows(res)]
    except (OSError, ValueError) as e:
        print(f"oracle_gap: {e}", file=sys.stderr)
        return 2
    if not rows:
        print("oracle_gap: no held-out set reports a switching oracle (is the suite one with in-episode shifts, "
              "evaluated with eval.baselines on?)", file=sys.stderr)
        return 2
    print(markdown_table(rows, COLUMNS))
    if not args.markdown:
        print("\nIntervals: 95 % Student-t over trials (vs_best: over the paired per-trial differences). "
              "oracle_gain: (oracle - best) / |best|; gap_closed: (method - best) / (oracle - best).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
