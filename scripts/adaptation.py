"""Did a method adapt within a trial? First vs last episode on each held-out set of an evaluation.

    python scripts/adaptation.py RUN_DIR_OR_RESULTS_JSON ... [--markdown]

For each results.json found (a run evaluated at several steps: its largest step; rows named by the run's label,
e.g. ``ppo__agent.lr-0.001``), prints one row per held-out
set and one over all sets: the first- and last-episode mean return with 95 % t-intervals (every trial of
every task of the set is one sample), the paired gain last - first with its interval, and ``adapts``: whether
the last episode's interval lies wholly above the first's. Exit status 2 with one message on a user error.
"""

from __future__ import annotations

import argparse
import sys

from dreamalloc.report.results import find_results, label_of, latest_per_run
from dreamalloc.report.tables import CI_NOTE_ADAPTATION, adaptation_rows, markdown_table

COLUMNS = ["label", "seed", "step", "set", "trials", "episodes", "first_ep", "last_ep", "gain", "adapts"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="run dirs, folders of runs, or results.json files")
    ap.add_argument("--markdown", action="store_true", help="print only the markdown table")
    ap.add_argument("--digits", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        warnings: list[str] = []
        found = latest_per_run(find_results(args.paths), warnings)
    except (OSError, ValueError) as e:
        print(f"adaptation: error: {e}", file=sys.stderr)
        return 2
    rows = []
    for path, res in found:
        for row in adaptation_rows(res):
            rows.append({**row, "label": label_of(res), "seed": res["seed"], "step": res["step"]})
        if not args.markdown:
            print(f"read {path}")
    print(markdown_table(rows, COLUMNS, args.digits))
    print(CI_NOTE_ADAPTATION)
    for w in warnings:
        print(f"adaptation: warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
