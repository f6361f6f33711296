#!/usr/bin/env python
"""Record the allocation trace of an unmodified program with valgrind, as a dreamalloc v1 trace.

    python scripts/record_trace.py [-o OUT.trace.gz] [--max-events N] [--process most|main|PID|NAME]
                                   [--all-processes] [--allow-empty] [--no-native] [--cells 256] -- COMMAND ...

Runs ``valgrind --tool=massif --massif-out-file=/dev/null --trace-malloc=yes --trace-sched=yes
--trace-children=yes --log-file=TMPDIR/T.%p COMMAND ...`` with ``PYTHONMALLOC=malloc`` in the environment (so
Python's small objects go through malloc). Every process of the command is traced (one log each);
``--process`` picks the one written: ``most`` (default: the most events, e.g. ``cc1`` under ``gcc -c``, the
compressor under ``tar -J``), ``main`` (the command's own pid), a pid, or a name matched against the first word
of each process's command (``cc1``; the most events among matches). The kept process, its own command line
(from the log's ``==PID== Command:`` line) and every other process are printed, and the header records them
(``command:`` the process's own command line, ``invocation:`` what was run). With ``--all-processes`` every
process with events gets its own file, OUT with the pid inserted before ``.trace`` (the kept one keeps OUT).
``--trace-sched=yes`` lets the parser tell threads apart (see ``parse_valgrind_log``).

A process with no heap allocation (gzip allocates nothing) is refused: a message on stderr, exit status 1
and no file, unless ``--allow-empty`` (then the empty trace is written, with a warning). ``--max-events N`` keeps
the first N events (a prefix of a trace is a valid trace).

Unless ``--no-native``, the command first runs once natively (no valgrind, same environment, output
discarded); the header records ``max_rss_kib`` (the largest resident set of any process of the command, KiB,
by GNU time's ``%M``: ``wait4`` of the command, which includes its waited-for descendants; without
/usr/bin/time a Python helper's ``RUSAGE_CHILDREN``, which cannot go below Python's own ~12 MB, and
``max_rss_by`` says which) and ``native_seconds`` (wall time of the run), what the system allocator used.
The recorder prints the trace's peak live bytes and the ``granularity: auto`` a ``--cells`` heap replays it at.
Trace a real binary, not a shell shim (pyenv's ``python3`` is a bash script: pass the interpreter's real path,
e.g. ``$(python3 -c 'import sys; print(sys.executable)')``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamalloc.alloc.workloads.traces import (  # noqa: E402
    auto_granularity,
    parse_valgrind_log,
    peak_live,
    valgrind_log_process,
    write_trace,
)

# Fallback when GNU time is missing: a fresh interpreter runs the command, and RUSAGE_CHILDREN covers its
# process tree; but its first exec inherits the interpreter's own high-water RSS (about 12 MB), a floor.
_NATIVE = """
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({"rc": rc, "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def valgrind_version(valgrind: str) -> str:
    return subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def native_run(cmd: list[str], env: dict) -> dict:
    """``rc``, ``max_rss_kib``, ``seconds`` and ``rss_by`` of one run of ``cmd`` without valgrind.

    The peak RSS is GNU time's ``%M`` (``wait4`` of its child, which includes the child's waited-for
    descendants: the largest process of the command's tree), measured by /usr/bin/time because a process
    forked from Python starts with Python's resident set and keeps it as its high-water mark."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    t = time.perf_counter()
    if gnu_time:
        with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
            rc = subprocess.run([gnu_time, "-q", "-f", "%M", "-o", f.name, *cmd], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, check=False).returncode
            seconds = time.perf_counter() - t
            return {"rc": rc, "max_rss_kib": int(f.read().split()[-1]), "seconds": seconds,
                    "rss_by": "GNU time %M (wait4 of the command)"}
    out = subprocess.run([sys.executable, "-c", _NATIVE, *cmd], env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t
    return dict(json.loads(out.stdout), seconds=seconds,
                rss_by="RUSAGE_CHILDREN of a Python helper (no /usr/bin/time: includes Python's own ~12 MB)")


def pick(procs: list[dict], choice: str, main_pid: int) -> dict:
    """The process ``--process`` names among ``procs`` (dicts with pid, command, events); ValueError if none."""
    if choice == "most":
        return max(procs, key=lambda p: (len(p["events"]), -p["pid"]))
    if choice == "main":
        pid = main_pid
    elif choice.isdigit():
        pid = int(choice)
    else:
        named = [p for p in procs if choice in Path(p["command"].split(" ", 1)[0]).name]
        if not named:
            raise ValueError(f"--process {choice!r} matches no traced process; traced: " + describe(procs))
        return max(named, key=lambda p: (len(p["events"]), -p["pid"]))
    for p in procs:
        if p["pid"] == pid:
            return p
    raise ValueError(f"--process {choice!r}: no traced process has pid {pid}; traced: " + describe(procs))


def describe(procs: list[dict]) -> str:
    return "; ".join(f"pid {p['pid']} ({len(p['events'])} events) {p['command'][:60]}" for p in procs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default="out.trace.gz", help="output trace (.gz compresses)")
    ap.add_argument("--max-events", type=int, default=None, help="keep only the first N events")
    ap.add_argument("--process", default="most",
                    help="which process to keep: most (events; default), main, a pid, or a command-name match")
    ap.add_argument("--all-processes", action="store_true", help="write one trace per traced process with events")
    ap.add_argument("--allow-empty", action="store_true", help="write a trace with no events (else an error)")
    ap.add_argument("--no-native", action="store_true", help="skip the native run (no max_rss_kib in the header)")
    ap.add_argument("--cells", type=int, default=256, help="heap size for the printed auto granularity")
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
    env = dict(os.environ, PYTHONMALLOC="malloc")
    native = None if args.no_native else native_run(cmd, env)
    version = valgrind_version(valgrind)
    with tempfile.TemporaryDirectory(prefix="dreamalloc-trace-") as tmp:
        vg = [valgrind, "--tool=massif", "--massif-out-file=/dev/null", "--trace-malloc=yes", "--trace-sched=yes",
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
        procs = []
        for log in logs:
            with open(log, encoding="utf-8", errors="replace") as fh:
                info = valgrind_log_process(fh)
            with open(log, encoding="utf-8", errors="replace") as fh:
                events = parse_valgrind_log(fh)
            procs.append({"pid": int(log.suffix[1:]), "command": info.get("command", shlex.join(cmd)),
                          "parent": info.get("parent", "?"), "events": events})
    main_pid = proc.pid  # valgrind runs the command in its own process: same pid
    try:
        kept = pick(procs, args.process, main_pid)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"kept pid {kept['pid']} ({len(kept['events'])} events, --process {args.process}): {kept['command']}")
    for p in procs:
        if p is not kept:
            print(f"  not kept: pid {p['pid']} ({len(p['events'])} events): {p['command'][:100]}")
    chosen = [kept] + ([p for p in procs if p is not kept and len(p["events"])] if args.all_processes else [])
    if not len(kept["events"]) and not args.allow_empty:
        print(f"error: {shlex.join(cmd)!r} made no heap allocation in any process (pid {kept['pid']} kept, "
              f"{len(procs)} traced): nothing to replay, so no trace is written; --allow-empty writes the empty "
              "trace anyway", file=sys.stderr)
        return 1
    out = Path(args.out)
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for p in chosen:
        events, total = p["events"], len(p["events"])
        if args.max_events is not None:
            events = events[: args.max_events]
        if not len(events):
            print(f"warning: the trace of pid {p['pid']} is empty (no heap allocation); written because of "
                  "--allow-empty", file=sys.stderr)
        target = out
        if p is not kept:
            stem = out.name.split(".trace")[0]
            target = out.with_name(out.name.replace(stem, f"{stem}.{p['pid']}", 1))
        role = "main" if p["pid"] == main_pid else f"child of {p['parent']}"
        why = f"kept by --process {args.process}" if p is kept else "--all-processes"
        comments = [f"command: {p['command']}", f"invocation: {shlex.join(cmd)}",
                    "recorded: PYTHONMALLOC=malloc " + shlex.join(vg[:-len(cmd)]).replace(tmp, "TMPDIR")
                    + " COMMAND",
                    f"valgrind: {version}", f"date: {date}",
                    f"process: {p['pid']} ({role}; {why}; {len(procs)} processes traced: "
                    + ", ".join(f"{q['pid']}={len(q['events'])}" for q in procs) + " events)",
                    f"events: {len(events)} of {total}", f"exit status: {rc}"]
        if native is not None:
            comments += [f"max_rss_kib: {native['max_rss_kib']}", f"native_seconds: {native['seconds']:.3f}",
                         f"native exit status: {native['rc']}", f"max_rss_by: {native['rss_by']}"]
        write_trace(target, events, comments)
        peak = peak_live(events)
        g = auto_granularity(events, args.cells)
        rss = f", native max RSS {native['max_rss_kib']} KiB in {native['seconds']:.3f} s" if native else ""
        print(f"{target}: {len(events)} events (of {total}) from pid {p['pid']}; peak live {peak} bytes "
              f"(granularity auto = {g} B/cell on {args.cells} cells){rss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
