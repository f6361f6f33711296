"""Recorded real allocation traces: the v1 file format, the valgrind log parser and the replay stream."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from invariants import check_heaps
from script_module import load_script

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.workloads import ALLOC, FREE, FREE_ALL, STREAMS
from dreamalloc.alloc.workloads.traces import (
    HEADER,
    TraceError,
    TraceStream,
    parse_valgrind_log,
    read_trace,
    resolve_trace,
    shipped_traces,
    write_trace,
)

EVENTS = [(0, 0, 64), (0, 1, 24), (1, 0, 0), (0, 0, 1024), (0, 7, 1), (1, 1, 0), (1, 7, 0)]
FIRST_FIT = 2  # the default heuristic actions are (best, worst, first)


# --------------------------------------------------------------------------------------------------
# file format
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["t.trace", "t.trace.gz"])
def test_write_read_round_trip(tmp_path, name):
    p = write_trace(tmp_path / name, EVENTS, comments=["command: echo hi", "second"])
    got = read_trace(p)
    assert got.dtype == np.int64 and got.shape == (len(EVENTS), 3)
    assert [tuple(e) for e in got.tolist()] == EVENTS
    raw = gzip.decompress(p.read_bytes()) if name.endswith(".gz") else p.read_bytes()
    lines = raw.decode().splitlines()
    assert lines[:3] == [HEADER, "# command: echo hi", "# second"]
    assert lines[3:6] == ["a 0 64", "a 1 24", "f 0"]


def test_write_rejects_invalid_events(tmp_path):
    with pytest.raises(TraceError, match="not live"):
        write_trace(tmp_path / "bad.trace", [(0, 0, 8), (1, 1, 0)])
    assert not (tmp_path / "bad.trace").exists()


BAD = {
    "header": ("# dreamalloc-trace v2\na 0 8\n", 1, "header"),
    "empty": ("", 1, "header"),
    "op": (f"{HEADER}\na 0 8\nx 0\n", 3, "unknown op"),
    "fields_a": (f"{HEADER}\na 0\n", 2, "3 fields"),
    "fields_f": (f"{HEADER}\na 0 8\nf 0 8\n", 3, "2 fields"),
    "nonint": (f"{HEADER}\na 0 8.5\n", 2, "integers"),
    "negative": (f"{HEADER}\na -1 8\n", 2, "integers"),
    "size0": (f"{HEADER}\n# c\na 0 0\n", 3, "size must be >= 1"),
    "unknown_free": (f"{HEADER}\na 0 8\nf 1\n", 3, "not live"),
    "double_free": (f"{HEADER}\na 0 8\nf 0\nf 0\n", 4, "not live"),
    "dup_live": (f"{HEADER}\na 0 8\na 1 8\na 0 8\n", 4, "still live"),
    "late_comment": (f"{HEADER}\na 0 8\n# late\n", 3, "comment"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_files_name_the_line(tmp_path, case):
    text, line, what = BAD[case]
    p = tmp_path / f"{case}.trace"
    p.write_text(text)
    with pytest.raises(TraceError, match=f"{case}.trace, line {line}: .*{what}"):
        read_trace(p)


def test_truncated_gzip(tmp_path):
    p = write_trace(tmp_path / "t.trace.gz", [(0, i, 8 + i) for i in range(2000)])
    data = p.read_bytes()
    q = tmp_path / "cut.trace.gz"
    q.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="cut.trace.gz"):
        read_trace(q)


# --------------------------------------------------------------------------------------------------
# valgrind logs
# --------------------------------------------------------------------------------------------------
LOG = """\
==100== Massif, a heap profiler
==100== Command: prog
--100-- malloc(5) = 0x4A40040
--100-- calloc(4,8) = 0x4A400A0
--100-- free(0x0)
--100-- free(0x4A40040)
--100-- realloc(0x4A400A0,2048) = 0x4A41DB0
--100-- realloc(0x0,1600)malloc(1600) = 0x4A42000
--100-- _Znwm(48) = 0x4A43000
--100-- memalign(al 64, size 100) = 0x4A44000
--100-- free(0xDEAD)
--100-- _ZdlPv(0x4A43000)
--100-- realloc(0x4A42000,0)free(0x4A42000)
--100--  = 0
--100-- malloc(0) = 0x4A45000
--100-- free(0x4A45000)
--100-- _Znam(16) = 0x4A46000
--100-- _ZdaPv(0x4A46000)
--100-- free(0x4A41DB0)
"""


def test_parse_valgrind_log_each_line_format():
    got = [tuple(e) for e in parse_valgrind_log(LOG).tolist()]
    assert got == [
        (0, 0, 5),  # malloc
        (0, 1, 32),  # calloc 4 * 8
        (1, 0, 0),  # free (free(0x0) skipped)
        (1, 1, 0), (0, 1, 2048),  # realloc = free old + alloc new
        (0, 0, 1600),  # realloc(0x0, N) = malloc
        (0, 2, 48),  # operator new
        (0, 3, 100),  # memalign: size N
        (1, 2, 0),  # operator delete (free of an unknown address skipped)
        (1, 0, 0),  # realloc(p, 0) = free
        (0, 0, 16), (1, 0, 0),  # new[] / delete[] (malloc(0) and its free skipped)
        (1, 1, 0),
    ]
    assert [tuple(e) for e in parse_valgrind_log(LOG.splitlines()).tolist()] == got


def test_parsed_log_writes_a_valid_trace(tmp_path):
    p = write_trace(tmp_path / "v.trace.gz", parse_valgrind_log(LOG), ["command: prog"])
    assert len(read_trace(p)) == 13


# --------------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------------
def test_shipped_traces_resolve_and_are_small():
    names = shipped_traces()
    assert {"python_json", "sqlite_insert"} <= set(names)
    for n in names:
        p = resolve_trace(n)
        assert p.stat().st_size < 300_000
    assert STREAMS["trace"] is TraceStream


class Recorder:
    """Wraps a stream's next() to log the requests of heap 0 and check every free names a live block."""

    def __init__(self, core):
        self.log, inner = [], core.stream.next

        def nxt(heaps, rows):
            req = inner(heaps, rows)
            f = req.op == FREE
            assert bool((req.block[f] >= 0).all()), "a trace free did not find its block"
            assert bool(heaps.live[rows[f], req.block[f]].all())
            for r, o, s in zip(rows.tolist(), req.op.tolist(), req.size.tolist(), strict=True):
                if r == 0:
                    self.log.append((o, s))
            return req

        core.stream.next = nxt


def test_replay_exact_requests_and_wraparound(tmp_path):
    # sizes 32, 16, 48, 20 bytes -> 2, 1, 3, 2 cells at 16 bytes per cell
    p = write_trace(tmp_path / "s.trace", [(0, 0, 32), (0, 1, 16), (1, 0, 0), (0, 0, 48), (1, 1, 0),
                                           (0, 1, 20), (1, 0, 0), (1, 1, 0)])
    core = AllocCore(1, cells=64, stream="trace", stream_params={"path": str(p), "granularity": 16})
    rec = Recorder(core)
    core.reset(seed=0)
    for _ in range(8):
        core.step(torch.tensor([FIRST_FIT]))
    one = [(ALLOC, 1), (FREE, 0), (ALLOC, 3), (FREE, 0), (ALLOC, 2)]  # after the first ALLOC 2 (at reset)
    assert rec.log == [(ALLOC, 2)] + one + [(FREE_ALL, 0), (ALLOC, 2)] + one + [(FREE_ALL, 0), (ALLOC, 2)]
    assert int(core.heaps.n_allocs[0]) == 8 and int(core.heaps.n_live[0]) == 0  # the pending ALLOC 2 not placed


def test_min_bytes_and_window(tmp_path):
    p = write_trace(tmp_path / "s.trace", [(0, 0, 32), (0, 1, 4), (1, 1, 0), (0, 1, 40), (1, 0, 0)])
    core = AllocCore(1, cells=64, stream="trace", stream_params={"path": str(p), "min_bytes": 8,
                                                                           "granularity": 16})
    rec = Recorder(core)
    core.reset(seed=0)
    for _ in range(3):
        core.step(torch.tensor([FIRST_FIT]))
    # the 4-byte block and its free are dropped; the trailing free becomes the FREE_ALL of the wrap-around
    assert rec.log == [(ALLOC, 2), (ALLOC, 3), (FREE_ALL, 0), (ALLOC, 2), (ALLOC, 3)]
    core = AllocCore(1, cells=64, stream="trace", stream_params={"path": str(p), "window": 2, "granularity": 8})
    rec = Recorder(core)
    core.reset(seed=0)
    for _ in range(3):
        core.step(torch.tensor([FIRST_FIT]))
    assert rec.log == [(ALLOC, 4), (ALLOC, 1), (FREE_ALL, 0), (ALLOC, 4), (ALLOC, 1)]


def run(B, seed, steps, **params):
    core = AllocCore(B, cells=256, stream="trace", stream_params=params)
    rec = Recorder(core)
    core.reset(seed=seed)
    out, ends = [], 0
    for i in range(steps):
        _, r, term, trunc, _ = core.step(torch.full((B,), FIRST_FIT))
        ends += int((term | trunc).sum())
        out.append(core.heaps.occ.clone())
        if i % 50 == 0:
            check_heaps(core.heaps)
    check_heaps(core.heaps)
    return torch.stack(out), ends, rec


@pytest.mark.parametrize("name", ["python_json", "sqlite_insert", "sort_gpl"])
def test_shipped_trace_replays_with_first_fit(name):
    occ, ends, rec = run(3, 0, 300, path=name)
    assert sum(op == ALLOC for op, _ in rec.log) >= 300
    assert sum(op == FREE for op, _ in rec.log) > 0


def test_replay_is_deterministic():
    a, _, ra = run(2, 5, 120, path="sqlite_insert", random_start=True, window=3000)
    b, _, rb = run(2, 5, 120, path="sqlite_insert", random_start=True, window=3000)
    assert torch.equal(a, b) and ra.log == rb.log


def test_batch_independence_random_start():
    B, seed, steps = 3, 11, 100
    batch, _, _ = run(B, seed, steps, path="python_json", random_start=True, window=4000)
    for b in range(B):
        single, _, _ = run(1, seed + b, steps, path="python_json", random_start=True, window=4000)
        assert torch.equal(batch[:, b], single[:, 0]), f"heap {b} differs from a batch of one with seed + {b}"


def test_state_dict_round_trip():
    core = AllocCore(2, cells=128, stream="trace",
                     stream_params={"path": "sqlite_insert", "random_start": True, "window": 400})
    core.reset(seed=9)
    act = torch.full((2,), FIRST_FIT)
    for _ in range(60):
        core.step(act)
    saved = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in core.stream.state_dict().items()}
    state = core.state_dict()

    def go():
        out = []
        for _ in range(60):
            core.step(act)
            out.append(core.heaps.occ.clone())
        return torch.stack(out)

    first = go()
    core.load_state_dict(state)
    assert torch.equal(core.stream.ptr, saved["ptr"])
    assert torch.equal(go(), first)


def test_random_start_varies_and_skips_older_frees():
    core = AllocCore(8, cells=256, stream="trace",
                     stream_params={"path": "sqlite_insert", "random_start": True, "window": 500})
    Recorder(core)  # every free must find its (post-start) block
    core.reset(seed=3)
    assert len(set(core.stream.start.tolist())) > 1
    for _ in range(200):
        core.step(torch.full((8,), FIRST_FIT))
    check_heaps(core.heaps)


def test_bad_params():
    with pytest.raises(FileNotFoundError, match="shipped traces"):
        TraceStream(1, 64, path="no_such_trace")
    with pytest.raises(ValueError, match="granularity"):
        TraceStream(1, 64, path="python_json", granularity=0)
    with pytest.raises(ValueError, match="no allocation"):
        TraceStream(1, 64, path="sort_gpl", min_bytes=10**9)


# --------------------------------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------------------------------
def _recorder():

    mod = load_script("record_trace")
    return mod


def test_record_without_valgrind_says_how_to_install(tmp_path, monkeypatch, capsys):
    rec = _recorder()
    monkeypatch.setattr(rec.shutil, "which", lambda name: None)
    assert rec.main(["-o", str(tmp_path / "x.trace"), "--", "/bin/true"]) == 2
    assert "apt-get install -y valgrind" in capsys.readouterr().err
    assert not (tmp_path / "x.trace").exists()


def test_record_a_real_program(tmp_path):
    """Needs valgrind: `make test` installs it (apt-get) where it is missing."""
    assert __import__("shutil").which("valgrind"), "valgrind is not installed: apt-get install -y valgrind"
    rec = _recorder()
    out = tmp_path / "echo.trace.gz"
    assert rec.main(["-o", str(out), "--max-events", "100", "--", "/bin/echo", "hi"]) == 0
    ev = read_trace(out)
    assert 0 < len(ev) <= 100 and ev[0, 0] == 0
    header = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert header[0] == HEADER and header[1] == "# command: /bin/echo hi"
    assert any(line.startswith("# valgrind: valgrind-") for line in header[:10])


def test_bench_env_measures_trace_replay_against_the_random_stream(capsys):
    """The benchmark row the README quotes: the native env on shipped traces, as a ratio to the random stream
    measured in the same run (a smoke run here: correctness of the table, not speed)."""

    bench = load_script("bench_env")
    assert bench.main(["--quick", "--seconds", "0.05", "--streams", "random,trace:sort_gpl"]) == 0
    out = capsys.readouterr().out
    assert "| 64 | random |" in out and "| 64 | trace:sort_gpl |" in out
    ratio = float(out.strip().splitlines()[-1].split("min_ratio_to_reference:")[1])
    assert ratio > 0
    # --vs-torch: each stream (a suite's training tasks too) on the compiled step and on the torch core
    assert bench.main(["--quick", "--seconds", "0.05", "--streams", "pattern,suite:traces", "--vs-torch"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 64 |")]
    assert [r.split(" | ")[1] for r in rows] == ["pattern", "suite:traces"] and all(r.count("|") == 7 for r in rows)
    assert "(torch core)" in out and float(out.split("min_speedup_vs_torch_core:")[1].split()[0]) > 0
    with pytest.raises(SystemExit, match="no suite 'nope'"):
        bench.main(["--quick", "--streams", "random,suite:nope"])


# --------------------------------------------------------------------------------------------------
# bad traces: negative sizes, allocations larger than the heap
# --------------------------------------------------------------------------------------------------
def test_negative_size_is_an_error_naming_the_line_or_event(tmp_path):
    p = tmp_path / "neg.trace"
    p.write_text(f"{HEADER}\na 0 8\na 1 -16\n")
    with pytest.raises(TraceError, match=r"neg.trace, line 3: allocation size must be >= 1, got the negative size"):
        read_trace(p)
    with pytest.raises(TraceError, match=r"neg.trace, line 3: allocation size"):
        AllocCore(1, cells=64, stream="trace", stream_params={"path": str(p)}).reset(seed=0)
    with pytest.raises(TraceError, match=r"event 1: allocation size must be >= 1, got -16"):
        write_trace(tmp_path / "w.trace", [(0, 0, 8), (0, 1, -16)])
    assert not (tmp_path / "w.trace").exists()


# 32 B -> 2 cells, 4096 B -> 256 cells (more than the 64-cell heap, line 3), 48 B -> 3, 16 B -> 1 at 16 B per cell
OVER = [(0, 0, 32), (0, 1, 4096), (1, 1, 0), (0, 2, 48), (1, 0, 0), (0, 3, 16), (1, 2, 0), (1, 3, 0)]


def replay_oversize(tmp_path, oversize: str, steps: int = 3):
    p = write_trace(tmp_path / "over.trace", OVER)
    core = AllocCore(1, cells=64, stream="trace", stream_params={"path": str(p), "oversize": oversize,
                                                                          "granularity": 16})
    rec = Recorder(core)
    core.reset(seed=0)
    for _ in range(steps):
        core.step(torch.tensor([FIRST_FIT]))
        check_heaps(core.heaps)
    return rec.log


def test_oversize_clip_warns_once_naming_the_line_and_replays_a_whole_heap_request(tmp_path):
    from dreamalloc.alloc.workloads.traces import TraceWarning

    with pytest.warns(TraceWarning, match=r"over.trace, line 3: allocation of 4096 bytes needs 256 cells at "
                      r"granularity 16 B/cell, more than the heap's 64 cells \(1 of 4 allocations do\): replayed "
                      r"clipped to 64 cells"):
        log = replay_oversize(tmp_path, "clip", steps=1)
    assert log[:2] == [(ALLOC, 2), (ALLOC, 64)]  # clipped to the whole heap: fits only an empty heap


def test_oversize_error_names_the_file_and_line(tmp_path):
    with pytest.raises(TraceError, match=r"over.trace, line 3: allocation of 4096 bytes needs 256 cells.*"
                       r"oversize='clip'.*'drop'"):
        replay_oversize(tmp_path, "error")


def test_oversize_drop_skips_the_allocation_and_its_free_silently(tmp_path, recwarn):
    log = replay_oversize(tmp_path, "drop", steps=4)
    # the 256-cell request never comes, nor its free (id 1): the one free before the third allocation is id 0's
    assert log[:6] == [(ALLOC, 2), (ALLOC, 3), (FREE, 0), (ALLOC, 1), (FREE_ALL, 0), (ALLOC, 2)]
    assert not [w for w in recwarn if "over.trace" in str(w.message)]


# --------------------------------------------------------------------------------------------------
# threads, processes, granularity auto, headers (issue 24, items 3 and 4)
# --------------------------------------------------------------------------------------------------
THREADED = """\
==7== Command: ./thr
--7-- malloc(8) = 0x1000
--7--   SCHED[2]:  acquired lock (thread_wrapper(starting new thread))
--7-- malloc(57)  SCHED[2]: releasing lock (VG_(scheduler):timeslice) -> VgTs_Yielding
--7--   SCHED[3]:  acquired lock (VG_(scheduler):timeslice)
--7-- calloc(17,16) = 0x2000
--7-- free(0x1000)
--7-- realloc(0x0,40)  SCHED[3]: releasing lock (VG_(scheduler):timeslice) -> VgTs_Yielding
--7--   SCHED[2]:  acquired lock (VG_(scheduler):timeslice)
--7--  = 0x3000
--7-- free(0x2000)
--7--   SCHED[3]:  acquired lock (VG_(scheduler):timeslice)
--7-- malloc(40) = 0x4000
--7-- free(0x3000)
"""


def test_threaded_log_is_split_per_thread():
    # thread 2's malloc(57) = 0x3000 lands after thread 3's calloc; thread 3's realloc(0x0, 40) = malloc(40)
    got = [tuple(e) for e in parse_valgrind_log(THREADED).tolist()]
    assert got == [(0, 0, 8), (0, 1, 272), (1, 0, 0), (0, 0, 57), (1, 1, 0), (0, 1, 40), (1, 0, 0)]


@pytest.mark.parametrize("log, line", [
    ("--7-- malloc(57)calloc(17,16) = 0x2000\n--7-- free(0x2000)\n", 1),
    ("--7-- malloc(8) = 0x1000\n--7--  = 0x2000\n", 2),
])
def test_interleaved_log_without_sched_lines_is_refused(log, line):
    with pytest.raises(TraceError, match=rf"line {line}: .*mixes the calls of several threads.*--trace-sched=yes"):
        parse_valgrind_log(log)


def test_valgrind_log_process_reads_the_preamble():
    from dreamalloc.alloc.workloads.traces import valgrind_log_process

    log = ("==12== Memcheck\n==12== Command: /usr/bin/as --64 -o a.o x\\ y.s\n==12== Parent PID: 11\n"
           "--12-- malloc(1) = 0x1")
    assert valgrind_log_process(log) == {"pid": "12", "command": "/usr/bin/as --64 -o a.o x\\ y.s", "parent": "11"}


def test_trace_header_reads_key_value_lines(tmp_path):
    from dreamalloc.alloc.workloads.traces import trace_header

    p = write_trace(tmp_path / "h.trace.gz", EVENTS, ["command: a b: c", "max_rss_kib: 1234", "no colon here",
                                                      "native_seconds: 0.5", "command: later"])
    assert trace_header(p) == {"command": "a b: c", "max_rss_kib": "1234", "native_seconds": "0.5"}
    (tmp_path / "bad.trace").write_text("a 0 8\n")
    with pytest.raises(TraceError, match="bad.trace, line 1: expected the header"):
        trace_header(tmp_path / "bad.trace")


def test_auto_granularity_fits_the_peak_and_nothing_is_clipped(tmp_path):
    from dreamalloc.alloc.workloads.traces import auto_granularity, peak_live, trace_stats

    # live bytes: 100, 4196, 4096 (free 0), 4296, 200 (free 1) -> peak 4296
    ev = [(0, 0, 100), (0, 1, 4096), (1, 0, 0), (0, 2, 200), (1, 1, 0), (1, 2, 0)]
    assert peak_live(ev) == 4296 and peak_live(ev, 64) == 64 + 4  # 4096 and 200 bytes live
    assert auto_granularity(ev, 64) == 128  # 64 * 64 = 4096 < 4296 <= 128 * 64
    p = write_trace(tmp_path / "g.trace", ev)
    st = trace_stats(p, 16, 64)
    assert (st["peak_live_bytes"], st["granularity"], st["clipped"], st["auto_granularity"]) == (4296, 16, 1, 128)
    assert trace_stats(p, "auto", 64)["clipped"] == 0
    s = TraceStream(1, 64, path=str(p))  # the default is auto
    assert s.granularity == 128 and s.size.tolist() == [1, 32, 0, 2, 0, 0]
    assert TraceStream(1, 64, path=str(p), granularity=16).granularity == 16
    from dreamalloc.alloc.workloads import make_stream

    with pytest.raises(ValueError, match=r"granularity='fine' must be an integer or one of auto"):
        make_stream("trace", 1, 64, path=str(p), granularity="fine")


SHIPPED_BEFORE_NATIVE = {"python_json", "sqlite_insert", "sort_gpl"}  # recorded before max_rss_kib existed


@pytest.mark.parametrize("name", shipped_traces())
def test_every_shipped_trace_reads_and_has_its_provenance(name):
    from pathlib import Path

    from dreamalloc.alloc.workloads.traces import auto_granularity, peak_live, trace_header, validate_events

    ev = validate_events(read_trace(resolve_trace(name)), name)
    assert len(ev) > 0
    head = trace_header(name)
    assert head["command"] and head["valgrind"].startswith("valgrind-3.")
    if name not in SHIPPED_BEFORE_NATIVE:
        assert int(head["max_rss_kib"]) > 0 and float(head["native_seconds"]) >= 0 and head["invocation"]
    g, peak = auto_granularity(ev, 256), peak_live(ev)
    assert g * 256 >= peak and (g == 1 or g * 128 < peak)
    readme = (Path(resolve_trace(name)).parent / "README.md").read_text()
    assert f"| `{name}` |" in readme, f"{name} has no row in the data folder's README"


def _need_valgrind():
    assert __import__("shutil").which("valgrind"), "valgrind is not installed: apt-get install -y valgrind"


GPL = "/usr/share/common-licenses/GPL-3"


def test_record_keeps_the_process_with_most_events_and_its_own_command(tmp_path, capsys):
    from dreamalloc.alloc.workloads.traces import trace_header

    _need_valgrind()
    rec = _recorder()
    out = tmp_path / "sort.trace.gz"
    # sh forks sort (the '; true' keeps dash from exec'ing it): sh itself makes a few allocations, sort hundreds
    assert rec.main(["-o", str(out), "--", "sh", "-c", f"sort -R {GPL} > /dev/null; true"]) == 0
    printed = capsys.readouterr().out
    head = trace_header(out)
    assert head["command"] in (f"sort -R {GPL}", f"/usr/bin/sort -R {GPL}")
    assert head["invocation"] == f"sh -c 'sort -R {GPL} > /dev/null; true'"
    assert "kept by --process most; 2 processes traced" in head["process"] and "child of" in head["process"]
    assert f"kept pid {head['process'].split()[0]} (" in printed and "not kept: pid" in printed
    assert len(read_trace(out)) > 100
    assert int(head["max_rss_kib"]) > 1000 and float(head["native_seconds"]) > 0  # the native run's numbers


def test_pick_main_pid_or_name():
    rec = _recorder()
    procs = [{"pid": 10, "command": "gcc -c a.c", "events": np.zeros((5, 3))},
             {"pid": 11, "command": "/usr/lib/gcc/cc1 a.c", "events": np.zeros((90, 3))},
             {"pid": 12, "command": "/usr/bin/as a.s", "events": np.zeros((9, 3))}]
    assert [rec.pick(procs, c, 10)["pid"] for c in ("most", "main", "12", "cc1", "as")] == [11, 10, 12, 11, 12]
    with pytest.raises(ValueError, match="'ld' matches no traced process; traced: pid 10 \\(5 events\\)"):
        rec.pick(procs, "ld", 10)
    with pytest.raises(ValueError, match="no traced process has pid 99"):
        rec.pick(procs, "99", 10)


def test_record_refuses_a_program_without_heap_allocations(tmp_path, capsys):
    _need_valgrind()
    rec = _recorder()
    out = tmp_path / "gzip.trace"
    assert rec.main(["-o", str(out), "--no-native", "--", "gzip", "-c", GPL]) == 1
    assert "made no heap allocation in any process" in capsys.readouterr().err and not out.exists()
    assert rec.main(["-o", str(out), "--no-native", "--allow-empty", "--", "gzip", "-c", GPL]) == 0
    assert "is empty" in capsys.readouterr().err
    assert len(read_trace(out)) == 0 and "max_rss_kib" not in out.read_text()  # --no-native: no native numbers


PTHREAD_C = r"""
#include <pthread.h>
#include <stdlib.h>
static void *volatile sink[8];
static void *work(void *arg) {
    long k = (long)arg;
    for (int i = 0; i < 20000; i++) {
        char *p = malloc(100 + k);          /* thread k: sizes 100 + k and 3 * (8 + k) */
        char *q = calloc(3, 8 + k);
        sink[k] = p; sink[k + 4] = q;
        free(q);
        free(p);
    }
    return NULL;
}
int main(void) {
    pthread_t t[4];
    for (long k = 0; k < 4; k++) pthread_create(&t[k], NULL, work, (void *)k);
    for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
    return 0;
}
"""


def test_record_a_threaded_program_pairs_each_call_with_its_result(tmp_path):
    import shutil
    import subprocess

    _need_valgrind()
    assert shutil.which("gcc"), "gcc is not installed: the test compiles a small pthread program (make test " \
        "installs it; else apt-get install -y gcc)"
    (tmp_path / "thr.c").write_text(PTHREAD_C)
    subprocess.run(["gcc", "-O0", "-pthread", str(tmp_path / "thr.c"), "-o", str(tmp_path / "thr")], check=True)
    rec = _recorder()
    out = tmp_path / "thr.trace.gz"
    assert rec.main(["-o", str(out), "--no-native", "--keep-logs", str(tmp_path / "logs"), "--",
                     str(tmp_path / "thr")]) == 0
    log = next((tmp_path / "logs").iterdir()).read_text()
    # the case this test is about did happen: a thread lost the lock between a call and its result
    assert any(")  SCHED[" in line and "releasing lock" in line for line in log.splitlines())
    ev = read_trace(out)  # read_trace checks that every free names a live block
    sizes = ev[ev[:, 0] == 0, 2].tolist()
    for k in range(4):
        assert sizes.count(100 + k) == 20000 and sizes.count(3 * (8 + k)) == 20000, k
    assert (ev[:, 0] == 1).sum() >= 160000
