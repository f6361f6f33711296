"""Compare methods across seeds from their evaluation results.

    python scripts/compare.py RUN_DIR_OR_RESULTS_JSON ... [--out DIR] [--markdown] [--digits N] [--metrics NAME ...]
                              [--versus LABEL]

Finds every results.json under the given paths (recursively; for a run evaluated at several steps, the
largest step), groups by (label, set, task) (the label is the method plus the run's overrides, e.g.
``ppo__agent.lr-0.001``, or what ``label=`` set; files without one use the method), and reports each seed's
mean return over all trials and episodes, merged into a mean with a 95 % t-interval across seeds (one seed:
n/a, and n_seeds says 1), the first- and last-episode means across seeds, the hindsight-best heuristic
and the capacity bound. Runs of one label evaluated at different steps are kept and warned about. Writes
compare.csv, compare.md, adaptation_<set>_<task>.png (return by episode index within a trial, one curve per
label, band across seeds), compare_sets.csv / compare_sets.md (per held-out set: the mean over its tasks per seed
against every fixed rule's, the best rule's and the bound; ``beats_best_rule`` where the seeds' interval of the
difference lies above 0) and learning_<suite>.png (each run's training return and the family's metrics, e.g.
mean job time, against env steps from its metrics.jsonl; band across seeds) and, for suites that switch inside an
episode, recovery_<set>_<task>.png (mean reward per decision by decisions since a switch, one curve per label with
its band across seeds, beside the best fixed rule and the switching oracle) into --out. With ``--versus LABEL``
also compare_versus.csv / compare_versus.md: per held-out set, every other label's set return minus LABEL's, the
seeds of the two as independent groups (Welch's 95 % interval), ``beats`` / ``behind`` where that interval lies
above / below 0: does a method beat another across reruns, not just in the mean.

By default it prints what it read, the table and what it wrote; --markdown prints only the markdown table
(to paste or pipe). Exit status 2 with one message naming the path or file on a user error.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dreamalloc.report.learning import learning_curves
from dreamalloc.report.results import find_results, label_of, latest_per_run
from dreamalloc.report.tables import (
    CI_NOTE_SEEDS,
    compare_curves,
    compare_recovery,
    compare_rows,
    markdown_table,
    set_rows,
    step_warnings,
    versus_rows,
    write_csv,
)

COLUMNS = ["label", "method", "set", "task", "n_seeds", "step", "return", "first_ep", "last_ep", "hindsight_rule",
           "hindsight_best", "capacity_bound"]
VERSUS_COLUMNS = ["label", "versus", "set", "n_seeds", "n_seeds_versus", "return", "return_versus", "difference",
                  "beats", "behind"]
SET_COLUMNS = ["label", "set", "tasks", "n_seeds", "return", "best_rule", "best_rule_return", "vs_best_rule",
               "beats_best_rule", "rule_per_task", "capacity_bound"]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "_"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="run dirs, folders of runs, or results.json files")
    ap.add_argument("--out", default="compare_out", help="folder for compare.csv, compare.md, plots")
    ap.add_argument("--markdown", action="store_true", help="print only the markdown table")
    ap.add_argument("--digits", type=int, default=2, help="decimals in the printed table")
    ap.add_argument("--metrics", nargs="*", default=[], help="per-episode metrics to add as columns (e.g. "
                    "mean_job_time): per-seed means, 95 %% interval across seeds")
    ap.add_argument("--versus", default=None, metavar="LABEL", help="also compare every label with this one per "
                    "held-out set (difference of seed means, Welch's 95 %% interval)")
    args = ap.parse_args(argv)

    try:
        warnings: list[str] = []
        found = latest_per_run(find_results(args.paths), warnings)
        results = [r for _, r in found]
        rows = compare_rows(results)
        srows = set_rows(results)
        vrows = versus_rows(results, args.versus) if args.versus is not None else None
        curves, curve_warnings = compare_curves(results)
        recovery = compare_recovery(results)
        metrics = tuple(sorted({m for r in results for s in r["sets"].values() for t in s["tasks"].values()
                                for m in t.get("metrics", {})}))
        learning, learning_warnings = learning_curves(found, metrics)
        warnings += step_warnings(results) + curve_warnings + learning_warnings
    except ValueError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2

    suites = sorted({r["suite"] for r in results})
    columns = (["suite"] if len(suites) > 1 else []) + COLUMNS + list(args.metrics)
    table = markdown_table(rows, columns, digits=args.digits) + "\n" + CI_NOTE_SEEDS + "\n"
    set_columns = (["suite"] if len(suites) > 1 else []) + [
        c for c in SET_COLUMNS if any(c in r for r in srows)]
    set_table = (markdown_table(srows, set_columns, digits=args.digits) + "\n" + CI_NOTE_SEEDS + " vs_best_rule: "
                 "the seeds' set returns minus the best fixed rule's on the set; beats_best_rule: that interval "
                 "lies above 0; rule_per_task: each task's own best rule (a selector told the task), the most "
                 "a policy that plays one fixed rule per task could reach.\n")

    versus_table = None
    if vrows is not None:
        versus_columns = (["suite"] if len(suites) > 1 else []) + VERSUS_COLUMNS
        versus_table = (markdown_table(vrows, versus_columns, digits=args.digits) + "\n" + CI_NOTE_SEEDS
                        + " difference: the label's seed means minus the versus label's, Welch's interval (the two "
                        "labels' seeds are independent runs, not pairs); beats / behind: that interval lies above / "
                        "below 0.\n")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "compare.csv", ["suite", *COLUMNS[:5], "seeds", *COLUMNS[5:], *args.metrics])
    (out / "compare.md").write_text(table)
    rule_columns = sorted({k for r in srows for k in r if k.startswith("rule_")})
    write_csv(srows, out / "compare_sets.csv", ["suite", *[c for c in set_columns if c != "suite"], *rule_columns])
    (out / "compare_sets.md").write_text(set_table)
    if versus_table is not None:
        write_csv(vrows, out / "compare_versus.csv", ["suite", *VERSUS_COLUMNS])
        (out / "compare_versus.md").write_text(versus_table)
    # imported here: the table needs no matplotlib, and a plotting problem should not cost the table
    from dreamalloc.report.plots import plot_adaptation, plot_learning, plot_recovery

    def named(kind: str, suite: str, sname: str, tname: str) -> tuple[Path, str]:  # a per-task plot's file, title
        many = len(suites) > 1
        path = out / f"{kind}_{_slug(suite) + '_' if many else ''}{_slug(sname)}_{_slug(tname)}.png"
        return path, f"{sname} / {tname}" + (f" ({suite})" if many else "")

    pngs = []
    for key, by_method in curves.items():
        path, title = named("adaptation", *key)
        pngs.append(plot_adaptation(by_method, path, title + ": mean across seeds, 95 % CI"))
    for key, by_name in recovery.items():
        path, title = named("recovery", *key)
        pngs.append(plot_recovery(by_name, path, title + ": mean across seeds"))
    for suite, by_metric in learning.items():
        pngs.append(plot_learning(by_metric, out / f"learning_{_slug(suite)}.png",
                                  f"{suite}: training episodes, mean across seeds, 95 % CI"))

    if args.markdown:
        print(table, end="")
    else:
        print(f"{len(found)} evaluations ({len({label_of(r) for r in results})} labels, suites {', '.join(suites)}):")
        for f, r in found:
            print(f"  {label_of(r)} seed {r['seed']} step {r['step']}: {f}")
        print()
        print(table)
        print("Per held-out set (the mean over its tasks), against every fixed rule:\n")
        print(set_table)
        if versus_table is not None:
            print(f"Per held-out set, against {args.versus!r}:\n")
            print(versus_table)
        versus = f", {out / 'compare_versus.csv'}, {out / 'compare_versus.md'}" if versus_table is not None else ""
        print(f"wrote {out / 'compare.csv'}, {out / 'compare.md'}, {out / 'compare_sets.csv'}, "
              f"{out / 'compare_sets.md'}{versus} and {len(pngs)} plot(s) in {out}")
    for w in warnings:
        print(f"compare: warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
