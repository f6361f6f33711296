#!/usr/bin/env python
"""Record the allocation trace of an unmodified program with valgrind, as a dreamalloc v1 trace.

    python scripts/record_trace.py [-o OUT.trace.gz] [--max-events N] [--all-processes] -- COMMAND ...

Runs ``valgrind --tool=massif --massif-out-file=/dev/null --trace-malloc=yes --trace-children=yes
--log-file=TMPDIR/T.%p COMMAND ...`` with ``PYTHONMALLOC=malloc`` in the environment (so Python's small
objects go through malloc), parses the per-process logs and writes the trace of the main process (the pid
of the command itself). With ``--all-processes`` every traced process gets its own file, OUT with the pid
inserted before ``.trace`` (the main process keeps OUT). ``--max-events N`` keeps the first N events (a
prefix of a trace is a valid trace). Trace a real binary, not a shell shim (pyenv's ``python3`` is a bash
script: pass the interpreter's real path, e.g. ``$(python3 -c 'import sys; print(sys.executable)')``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamalloc.alloc.workloads.traces import parse_valgrind_log, write_trace  # noqa: E402


def valgrind_version(valgrind: str) -> str:
    return subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default="out.trace.gz", help="output trace (.gz compresses)")
    ap.add_argument("--max-events", type=int, default=None, help="keep only the first N events")
    ap.add_argument("--all-processes", action="store_true", help="write one trace per traced process")
    ap.add_argument("--keep-logs", default=None, help="copy the raw valgrind logs into this folder")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command given: use  record_trace.py [-o OUT] -- COMMAND ARGS...")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("error: valgrind is not installed (on Debian/Ubuntu: apt-get update && apt-get install -y "
              "valgrind)", file=sys.stderr)
        return 2
    version = valgrind_version(valgrind)
    env = dict(os.environ, PYTHONMALLOC="malloc")
    with tempfile.TemporaryDirectory(prefix="dreamalloc-trace-") as tmp:
        vg = [valgrind, "--tool=massif", "--massif-out-file=/dev/null", "--trace-malloc=yes",
              "--trace-children=yes", f"--log-file={tmp}/T.%p", *cmd]
        proc = subprocess.Popen(vg, env=env, stdout=subprocess.DEVNULL)
        rc = proc.wait()
        logs = sorted(Path(tmp).glob("T.*"), key=lambda p: int(p.suffix[1:]))
        if not logs:
            print(f"error: valgrind wrote no log (exit status {rc}); command: {shlex.join(vg)}", file=sys.stderr)
            return 1
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for log in logs:
                shutil.copy(log, Path(args.keep_logs) / log.name)
        main_pid = proc.pid  # valgrind runs the command in its own process: same pid
        chosen = logs if args.all_processes else [p for p in logs if int(p.suffix[1:]) == main_pid] or logs[:1]
        out = Path(args.out)
        date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for log in chosen:
            pid = int(log.suffix[1:])
            with open(log, encoding="utf-8", errors="replace") as fh:
                events = parse_valgrind_log(fh)
            total = len(events)
            if args.max_events is not None:
                events = events[: args.max_events]
            target = out
            if pid != main_pid:
                stem = out.name.split(".trace")[0]
                target = out.with_name(out.name.replace(stem, f"{stem}.{pid}", 1))
            comments = [f"command: {shlex.join(cmd)}",
                        "recorded: PYTHONMALLOC=malloc " + shlex.join(vg[:-len(cmd)]).replace(tmp, "TMPDIR")
                        + " COMMAND",
                        f"valgrind: {version}", f"date: {date}", f"process: {pid}"
                        + (" (main)" if pid == main_pid else " (child)"),
                        f"events: {len(events)} of {total}", f"exit status: {rc}"]
            write_trace(target, events, comments)
            print(f"{target}: {len(events)} events (of {total}) from pid {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
