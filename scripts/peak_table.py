"""Peak memory on whole traces: one table from every ``eval.mode=peak`` evaluation under the given folders.

    python scripts/peak_table.py RUN_DIR_OR_PEAK_JSON ... [--out FILE.md]

Reads every ``peak.json`` (written by ``python evaluate.py ... eval.mode=peak``), groups agent rows by label (seeds
merged: mean and 95 % t-interval of extent / max live, fragmentation at the live peak and failures), lists each
fixed rule and the capacity bound once per trace, and adds per trace its heap (cells, bytes per cell), the peak live
bytes of the program and, where the trace's header records it, the program's own peak RSS under the system
allocator (``max_rss_kib``). Exit status 2 with one message on a user error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dreamalloc.alloc.workloads.traces import trace_header, trace_stats
from dreamalloc.report.tables import PEAK_COLUMNS, format_value, markdown_table, peak_rows


def find_docs(paths: list[str]) -> list[dict]:
    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        files += [p] if p.is_file() else sorted(p.rglob("peak.json"))
    if not files:
        raise FileNotFoundError(f"no peak.json under {', '.join(paths)}: run python evaluate.py ... eval.mode=peak")
    docs = []
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not JSON ({e})") from None
        if doc.get("mode") != "peak" or "rows" not in doc:
            raise ValueError(f"{f}: not an eval.mode=peak document")
        docs.append(doc)
    return docs


def program_facts(trace: str) -> dict:
    stats, rss = trace_stats(trace), trace_header(trace).get("max_rss_kib")
    return {"peak_live_kib": stats["peak_live_bytes"] / 1024, "system_max_rss_kib": float(rss) if rss else None,
            "allocations": stats["allocs"]}


def pivot(rows: list[dict], programs: list[dict]) -> list[dict]:
    """One row per trace: the program's peak live KiB and system RSS, then each method's extent / max live (its
    failures in parentheses when there are any)."""
    out = []
    for prog in programs:
        row = {"trace": prog["trace"], "peak live KiB": prog["peak_live_kib"],
               "system max RSS KiB": prog["system_max_rss_kib"]}
        for r in rows:
            if r["trace"] == prog["trace"]:
                cell = format_value(r["extent_over_live"], 3)
                fails = r["failures"]
                if isinstance(fails, tuple) or fails:
                    cell += f" ({format_value(fails, 1)} failed)"
                row[r["method"]] = cell
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="run folders or peak.json files")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--long", action="store_true", help="also every method's row with times and fragmentation")
    a = ap.parse_args(argv)
    try:
        docs = find_docs(a.paths)
        rows = peak_rows(docs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    programs = []
    for t in dict.fromkeys(r["trace"] for r in rows):
        first = next(r for r in rows if r["trace"] == t)
        programs.append({"trace": t, **program_facts(t), "cells": first["cells"],
                         "bytes_per_cell": first["granularity"]})
    text = ("Heap extent over maximum live cells per method (1.000 = no fragmentation; the capacity bound is 1 by "
            "definition; agents: mean [95 % t-interval] across seeds; failures: allocations that fitted nowhere). "
            "Peak live: the most bytes the program had allocated at once; system max RSS: the program's own peak "
            "resident set under the system allocator, where the recorder measured it (code, stack and libraries "
            "included).\n\n"
            + markdown_table(pivot(rows, programs), digits=0)
            + "\n\nHeaps (cells, bytes per cell) and allocations replayed:\n\n"
            + markdown_table(programs, ["trace", "allocations", "cells", "bytes_per_cell"], digits=0) + "\n")
    if a.long:
        text += ("\nEvery method (frag_at_peak: 1 - live / extent at the live peak; decision_us: median wall time of "
                 "a decision, policy and env step, per heap (the rules step as one batch); policy_us: the policy's "
                 "choice alone):\n\n" + markdown_table(rows, list(PEAK_COLUMNS), digits=3) + "\n")
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
