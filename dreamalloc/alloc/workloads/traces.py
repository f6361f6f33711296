"""Recorded allocation traces of real programs, and their replay as a request stream.

Trace format v1
---------------
A text file, optionally gzip-compressed (the name ends in ``.gz``)::

    # dreamalloc-trace v1
    # command: gzip -c /usr/share/dict/words        (any number of further '#' comment lines)
    a 0 64          allocate 64 bytes (SIZE >= 1) as the new live id 0
    a 1 24
    f 0             free the live id 0
    a 0 1024        ids can be reused once freed

The first line is exactly ``# dreamalloc-trace v1``; comment lines may only follow it, before the first
event. Ids are non-negative integers that only pair allocations with frees (they carry no address);
``realloc`` is recorded as a free of the old block followed by an allocation of the new one. Blocks still
live at the end of the trace are simply never freed. ``read_trace`` returns an ``[E, 3]`` int64 array of
(op, id, size) with op 0 = alloc, 1 = free (size 0 for frees); any malformed file raises ``TraceError`` naming
the file, the line and what was expected, and nothing is returned half-loaded.

Recording: ``scripts/record_trace.py`` runs an unmodified program under valgrind's ``--trace-malloc=yes``;
``parse_valgrind_log`` turns that log into events (per thread, from ``--trace-sched=yes``'s lock lines), and
``valgrind_log_process`` reads each process's own command line from the log's preamble (docs/reference.md
section 7).

Replay (``TraceStream``, registered as stream ``"trace"``)
---------------------------------------------------------
Byte sizes become ``ceil(bytes / granularity)`` cells; allocations smaller than ``min_bytes`` are dropped
with their frees. ``granularity`` is bytes per cell, or ``"auto"`` (the default): the smallest power of two at
which the trace's peak live bytes fit in the heap's cells (``auto_granularity``; real programs peak at 20x
to 24,000x a 256-cell heap at 16 B/cell), so no request is clipped.
An allocation needing more cells than the heap has (only with an explicit granularity) is, by the stream
parameter ``oversize``: ``"clip"`` (default: replayed as a whole-heap request, which can only fit an empty
heap; a ``TraceWarning`` names the file, the first such line and how many there are, once per trace, heap
size and granularity), ``"error"`` (a ``TraceError`` naming the file and line) or ``"drop"`` (skipped with
its free, like ``min_bytes``). The shipped suites replay traces with a few such allocations (python_json has
17 above 256 cells at 64 B/cell), so clipping stays the default. ``trace_stats(path, granularity, cells)``
gives a program the peak live bytes and cells, the clipped count and the auto granularity of a trace;
``trace_header(path)`` the ``# key: value`` lines of its header (the recorder writes ``command``,
``valgrind``, ``process``, ``max_rss_kib``, ``native_seconds``, ...).

Each heap replays a segment of the trace: from event 0 (or, with ``random_start``, from an allocation event
drawn per (seed, episode)) for at most ``window`` events. A free names the block by its allocation ordinal
within the episode, mapped to a heap slot through ``heaps.block_seq`` (an episode ends at the first
allocation that fits nowhere, so every earlier allocation succeeded and the ordinals match). Frees of blocks
allocated before the segment start are skipped. When no allocation is left in the segment the stream issues
FREE_ALL and replays the segment again, so episodes can run as long as the allocator survives. Limitation: a
run of more than ``4 * cells + 15`` consecutive frees inside a segment (rare: the exit-time free storm is
turned into the FREE_ALL) trips the env's guard.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from dreamalloc.alloc.workloads.base import ALLOC, FREE, FREE_ALL, Requests, RequestStream
from dreamalloc.alloc.workloads.params import BOOL, INT, PATH, STR, choice, one_of, optional
from dreamalloc.core.rng import CounterRNG

HEADER = "# dreamalloc-trace v1"
OP_ALLOC, OP_FREE = 0, 1
DATA_DIR = Path(__file__).resolve().parent / "data" / "traces"


class TraceError(ValueError):
    """A malformed trace file (the message names the file and line)."""


# --------------------------------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------------------------------
def _as_events(events) -> np.ndarray:
    arr = np.asarray(events, dtype=np.int64)
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"events must be (op, id, size) triples, got an array of shape {arr.shape}")
    return arr


def validate_events(events, where: str = "events") -> np.ndarray:
    """Check the pairing of (op, id, size) events; raises TraceError naming the offending event."""
    arr = _as_events(events)
    live: set[int] = set()
    for i, (op, bid, size) in enumerate(arr.tolist()):
        if bid < 0:
            raise TraceError(f"{where}, event {i}: id must be a non-negative integer, got {bid}")
        if op == OP_ALLOC:
            if size < 1:
                raise TraceError(f"{where}, event {i}: allocation size must be >= 1, got {size}")
            if bid in live:
                raise TraceError(f"{where}, event {i}: id {bid} is allocated while already live")
            live.add(bid)
        elif op == OP_FREE:
            if bid not in live:
                raise TraceError(f"{where}, event {i}: free of id {bid}, which is not live")
            live.discard(bid)
        else:
            raise TraceError(f"{where}, event {i}: op must be 0 (alloc) or 1 (free), got {op}")
    return arr


def write_trace(path, events, comments: Iterable[str] = ()) -> Path:
    """Write events (an ``[E, 3]`` array or (op, id, size) triples) as a v1 trace; gzip if the name ends in .gz.

    The events are validated first, so a written trace always reads back."""
    path = Path(path)
    arr = validate_events(events, str(path))
    lines = [HEADER]
    for c in comments:
        for part in str(c).splitlines() or [""]:
            lines.append(f"# {part}")
    for op, bid, size in arr.tolist():
        lines.append(f"a {bid} {size}" if op == OP_ALLOC else f"f {bid}")
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        # mtime=0: the same events give the same bytes
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(text.encode("utf-8"))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _read_text(path: Path, name: str) -> str:
    """The file's text; a truncated gzip stream, a non-gzip ``.gz`` or bytes that are not UTF-8 are a
    ``TraceError`` naming the line where the readable text stops."""
    raw = path.read_bytes()  # FileNotFoundError / PermissionError pass through: they name the path
    if path.name.endswith(".gz"):
        parts, rest = [], raw
        try:
            while rest:  # concatenated gzip members (gzip -c a >> f) are one file
                d = zlib.decompressobj(wbits=31)
                parts.append(d.decompress(rest))
                if not d.eof:
                    data = b"".join(parts)
                    line = data.count(b"\n") + 1
                    raise TraceError(f"{name}, line {line}: the gzip stream ends early (the file is truncated after "
                                     f"{line - 1} complete lines); expected a complete gzip file: copy or record "
                                     "it again")
                rest = d.unused_data
        except zlib.error as e:
            line = b"".join(parts).count(b"\n") + 1
            raise TraceError(f"{name}, line {line}: cannot decompress the file ({e}); expected "
                             "a text trace, gzip-compressed when the name ends in .gz") from None
        raw = b"".join(parts)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise TraceError(f"{name}, line {line}: not UTF-8 text (byte {e.start}); "
                         "expected a text trace, optionally gzip-compressed (a name ending in .gz)") from None


_INT64_MAX = (1 << 63) - 1


def read_trace(path, with_lines: bool = False):
    """Read a v1 trace (plain or .gz) into an ``[E, 3]`` int64 array of (op, id, size); with ``with_lines``,
    also the ``[E]`` line number (1-based) of each event, for messages about an event.

    Every fault is one ``TraceError`` naming the file and line: a missing or unknown header (another format
    version), a truncated file (a gzip stream that ends early, or a last line without its newline), an
    unknown op, a wrong field count, a non-integer, negative or too large (over 2^63 - 1) id or size, a size
    below 1, an id allocated while live, a free of an id that is not live, a comment after the first event."""
    path = Path(path)
    name = str(path)
    text = _read_text(path, name)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0].rstrip("\r") != HEADER:
        got = lines[0][:60] if lines else "an empty file"
        if lines and lines[0].startswith("# dreamalloc-trace v"):
            raise TraceError(f"{name}, line 1: unsupported trace format header {lines[0][2:].strip()[:40]!r}; this "
                             f"version reads {HEADER[2:]!r} (first line exactly {HEADER!r})")
        raise TraceError(f"{name}, line 1: expected the header {HEADER!r}, got {got!r}")
    if not text.endswith("\n"):
        raise TraceError(f"{name}, line {len(lines)}: the last line {lines[-1][:60]!r} has no newline, so the file "
                         "looks truncated (a v1 trace ends with a newline; write_trace and record_trace always "
                         "write one); copy or record it again, or add the final newline if the file is complete")
    out = np.zeros((len(lines), 3), dtype=np.int64)
    line_of = np.zeros(len(lines), dtype=np.int64)
    n = 0
    live: set[int] = set()
    in_header = True
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if line.startswith("#"):
            if not in_header:
                raise TraceError(f"{name}, line {lineno}: comment lines are only allowed before the first event")
            continue
        in_header = False
        fields = line.split()
        if not fields:
            raise TraceError(f"{name}, line {lineno}: expected an event 'a ID SIZE' or 'f ID', got an empty line")
        op = fields[0]
        if op == "a":
            if len(fields) != 3:
                raise TraceError(f"{name}, line {lineno}: expected 'a ID SIZE' (3 fields), got {len(fields)}: "
                                 f"{line!r}")
        elif op == "f":
            if len(fields) != 2:
                raise TraceError(f"{name}, line {lineno}: expected 'f ID' (2 fields), got {len(fields)}: {line!r}")
        else:
            raise TraceError(f"{name}, line {lineno}: unknown op {op!r}; expected 'a' (alloc) or 'f' (free)")
        for what, x in zip(("id", "size"), fields[1:], strict=False):
            digits = x[1:] if x.startswith("-") else x
            if not digits.isdigit() or not digits.isascii():
                raise TraceError(f"{name}, line {lineno}: the {what} {x!r} is not an integer; expected "
                                 f"non-negative integers after {op!r}, got {line!r}")
            if x.startswith("-"):
                if what == "size":
                    raise TraceError(f"{name}, line {lineno}: allocation size must be >= 1, got the negative size "
                                     f"{x} in {line!r}")
                raise TraceError(f"{name}, line {lineno}: ids are non-negative integers, got {x} in {line!r}")
            if int(digits) > _INT64_MAX:
                raise TraceError(f"{name}, line {lineno}: the {what} {x} is too large (at most 2^63 - 1) in "
                                 f"{line!r}")
        bid = int(fields[1])
        if op == "a":
            size = int(fields[2])
            if size < 1:
                raise TraceError(f"{name}, line {lineno}: allocation size must be >= 1, got {size}")
            if bid in live:
                raise TraceError(f"{name}, line {lineno}: id {bid} is allocated again while still live "
                                 "(expected a new or freed id)")
            live.add(bid)
            out[n] = (OP_ALLOC, bid, size)
        else:
            if bid not in live:
                raise TraceError(f"{name}, line {lineno}: free of id {bid}, which is not live (expected the id "
                                 "of a live allocation)")
            live.discard(bid)
            out[n] = (OP_FREE, bid, 0)
        line_of[n] = lineno
        n += 1
    events = out[:n].copy()
    return (events, line_of[:n].copy()) if with_lines else events


def trace_header(path) -> dict[str, str]:
    """The ``# key: value`` comment lines of a trace's header as a dict of strings (``command``, ``valgrind``,
    ``max_rss_kib``, ``native_seconds``, ...; the first occurrence of a key wins); reads only the header. A
shipped trace's name works too."""
    path = resolve_trace(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    out: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        first = fh.readline().rstrip("\r\n")
        if first != HEADER:
            raise TraceError(f"{path}, line 1: expected the header {HEADER!r}, got {first[:60]!r}")
        for line in fh:
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].strip().partition(":")
            if sep and key.strip() and key.strip() not in out:
                out[key.strip()] = value.strip()
    return out


def resolve_trace(path) -> Path:
    """A file path, or the name of a shipped trace (``"python_json"`` -> data/traces/python_json.trace.gz)."""
    p = Path(path)
    if p.exists():
        return p
    for cand in (DATA_DIR / str(path), DATA_DIR / f"{path}.trace.gz", DATA_DIR / f"{path}.trace"):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"no trace file {str(path)!r} and no shipped trace of that name; shipped traces: "
                            f"{', '.join(shipped_traces()) or 'none'}")


def shipped_traces() -> list[str]:
    if not DATA_DIR.is_dir():
        return []
    return sorted(f.name.split(".trace")[0] for f in DATA_DIR.iterdir() if ".trace" in f.name)


# --------------------------------------------------------------------------------------------------
# valgrind --trace-malloc=yes logs
# --------------------------------------------------------------------------------------------------
_PREFIX = re.compile(r"^--(\d+)--\s?")
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)")
_RESULT = re.compile(r"=\s*(0x[0-9A-Fa-f]+|0|\(nil\))\s*$")
_ALLOC_NAMES = {"malloc", "valloc", "pvalloc", "memalign", "aligned_alloc", "__builtin_new",
                "__builtin_vec_new"}
_FREE_NAMES = {"free", "cfree", "__builtin_delete", "__builtin_vec_delete"}


def _int(s: str) -> int:
    s = s.strip()
    if s in ("(nil)", ""):
        return 0
    return int(s, 16) if s.lower().startswith("0x") else int(s)


def _size_arg(args: str) -> int:
    """Size of an allocating call: ``size N`` if named (memalign(al A, size N)), else the first integer."""
    m = re.search(r"size\s+(\d+)", args)
    if m:
        return int(m.group(1))
    return _int(args.split(",")[0])


_SCHED = re.compile(r"SCHED\[(\d+)\]:\s*(.*)$")
_ORPHAN = re.compile(r"^=\s*0x0*[1-9A-Fa-f][0-9A-Fa-f]*\s*$")


def _thread_lines(lines):
    """(pid, line number, body) of each call line, with the text of every thread put back together.

    valgrind prints a call and its result in two writes; another thread can run in between. With
    ``--trace-sched=yes`` the log says when each thread takes the scheduler lock (``SCHED[T]:  acquired lock``),
    and a switch always ends the line (``calloc(3,10)  SCHED[2]: releasing lock ...``), so each thread's own
    text is the concatenation of what was printed while it held the lock."""
    tid: dict[str, str] = {}
    partial: dict[tuple[str, str], tuple[int, str]] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n") if isinstance(raw, str) else raw.decode(errors="replace").rstrip("\r\n")
        m = _PREFIX.match(line)
        if not m:
            continue
        pid, body = m.group(1), line[m.end():]
        key = (pid, tid.get(pid, "1"))
        k = body.find("SCHED[")
        if k >= 0:
            pre = body[:k].strip()
            if pre:
                start, text = partial.get(key, (lineno, ""))
                partial[key] = (start, text + pre)
            s = _SCHED.search(body[k:])
            if s and s.group(2).startswith("acquired lock"):
                tid[pid] = s.group(1)
            continue
        first, head = partial.pop(key, (lineno, ""))
        yield pid, first, (head + body).strip()


def parse_valgrind_log(text_or_lines) -> np.ndarray:
    """Events ``[E, 3]`` of (op, id, size) from a valgrind ``--trace-malloc=yes`` log (one or more processes).

    Allocations are paired with frees by (pid, address); ids are handed out in order and reused after a free.
    free(0x0), frees of unknown addresses and failed allocations (= 0x0) are skipped; realloc(0x0, N) is an
    allocation, realloc(p, 0) a free, realloc(p, N) a free of p then an allocation; calloc(n, m) has size
    n * m; memalign(al A, size N) has size N; C++ ``_Zn*`` / ``_Zd*`` are new / delete.

    Threads: a log recorded with ``--trace-sched=yes`` (as scripts/record_trace.py does) is split per thread
    first (see ``_thread_lines``), so a call whose result lands after another thread's calls keeps its own
    size and result. A log without those lines whose calls interleave (``malloc(57)calloc(17,16) = 0x...``, or
    a result alone on a later line) cannot be paired and raises a ``TraceError`` naming the line.
    """
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else text_or_lines
    events: list[tuple[int, int, int]] = []
    addr_id: dict[tuple[str, int], int] = {}
    free_ids: list[int] = []
    next_id = 0

    def alloc(pid: str, addr: int, size: int) -> None:
        nonlocal next_id
        if addr == 0 or size < 1:  # failed, or malloc(0): nothing to model (0-byte blocks)
            return
        key = (pid, addr)
        if key in addr_id:  # an address handed out twice without a free we saw: forget the old block
            events.append((OP_FREE, addr_id.pop(key), 0))
            free_ids.append(events[-1][1])
        if free_ids:
            bid = free_ids.pop()
        else:
            bid, next_id = next_id, next_id + 1
        addr_id[key] = bid
        events.append((OP_ALLOC, bid, size))

    def free(pid: str, addr: int) -> None:
        bid = addr_id.pop((pid, addr), None)
        if bid is not None:
            events.append((OP_FREE, bid, 0))
            free_ids.append(bid)

    def interleaved(lineno: int, body: str) -> TraceError:
        return TraceError(f"valgrind log, line {lineno}: {body[:80]!r} mixes the calls of several threads (valgrind "
                          "prints a call and its result in two writes, and another thread ran in between), so "
                          "sizes and results cannot be paired; record the program again with valgrind's "
                          "--trace-sched=yes (scripts/record_trace.py does), which tells the threads apart")

    for pid, lineno, body in _thread_lines(lines):
        c = _CALL.match(body)
        if not c:
            if _ORPHAN.match(body):  # a non-null result with no call before it: its call is on another line
                raise interleaved(lineno, body)
            continue
        name, args = c.group(1), c.group(2)
        if name != "realloc" and _CALL.match(body[c.end():].lstrip()):
            raise interleaved(lineno, body)  # only realloc prints the malloc / free it calls on its line
        r = _RESULT.search(body)
        result = _int(r.group(1)) if r else 0
        try:
            if name == "realloc":
                old_s, size_s = args.split(",")
                old, size = _int(old_s), _int(size_s)
                if old == 0:
                    alloc(pid, result, size)
                elif size == 0:
                    free(pid, old)
                elif result != 0:
                    free(pid, old)
                    alloc(pid, result, size)
            elif name == "calloc":
                n, sz = (int(x) for x in args.split(","))
                alloc(pid, result, n * sz)
            elif name in _ALLOC_NAMES or name.startswith("_Zn"):
                alloc(pid, result, _size_arg(args))
            elif name in _FREE_NAMES or name.startswith("_Zd"):
                addr = _int(args.split(",")[0])
                if addr != 0:
                    free(pid, addr)
        except ValueError:
            continue  # a line of another shape (e.g. malloc_usable_size): not an allocation event
    return np.asarray(events, dtype=np.int64).reshape(-1, 3)


_COMMAND = re.compile(r"^==(\d+)==\s+(Command|Parent PID):\s?(.*)$")


def valgrind_log_process(text_or_lines) -> dict[str, str]:
    """``pid``, ``command`` and ``parent`` of a one-process valgrind log, from its preamble
    (``==PID== Command: ...`` and ``==PID== Parent PID: ...``); missing ones are absent."""
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else text_or_lines
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _COMMAND.match(line.rstrip("\r\n"))
        if m:
            out["pid"] = m.group(1)
            out["command" if m.group(2) == "Command" else "parent"] = m.group(3).strip()
        if "parent" in out or i > 50:
            break
    return out


# --------------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------------
def cells_needed(events: np.ndarray, granularity: int) -> np.ndarray:
    """[E] cells each event's block takes at ``granularity`` bytes per cell (ceil; 0 for frees)."""
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 3)
    return np.where(ev[:, 0] == OP_ALLOC, -(-ev[:, 2] // granularity), 0)


def block_bytes(events: np.ndarray) -> np.ndarray:
    """[E] bytes of each event's block: the allocation's size, and for a free the size of the block it frees."""
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 3)
    out = ev[:, 2].copy()
    size_of: dict[int, int] = {}
    for i, (op, bid, size) in enumerate(ev.tolist()):
        if op == OP_ALLOC:
            size_of[bid] = size
        else:
            out[i] = size_of.pop(bid)
    return out


def _peak(ev: np.ndarray, size: np.ndarray, granularity: int | None) -> int:
    if len(ev) == 0:
        return 0
    if granularity is not None:
        size = -(-size // int(granularity))
    return int(max(0, np.cumsum(np.where(ev[:, 0] == OP_ALLOC, size, -size)).max()))


def peak_live(events: np.ndarray, granularity: int | None = None) -> int:
    """The most live bytes at any point of the trace (``granularity=None``), or the most live cells when each
    block takes ``ceil(bytes / granularity)`` cells."""
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 3)
    return _peak(ev, block_bytes(ev), granularity)


def auto_granularity(events: np.ndarray, cells: int) -> int:
    """``granularity: auto``: the smallest power of two (bytes per cell) at which the trace's peak live bytes
    fit in the heap (``peak_live_bytes <= granularity * cells``), so no request is clipped (one block is at
    most the peak). Each block still takes at least one cell, so the peak live cells (``peak_live(events,
    granularity)``) can exceed the heap when more blocks than cells are live at once."""
    peak = peak_live(events)
    g = 1
    while g * cells < peak:
        g *= 2
    return g


def trace_stats(path, granularity: int | str = "auto", cells: int = 256) -> dict:
    """What a replay of the trace on a ``cells``-cell heap does to it: ``events``, ``allocs``, ``frees``,
    ``max_alloc_bytes``, ``peak_live_bytes``, the ``granularity`` (``"auto"`` resolved), ``peak_live_cells``,
    ``clipped`` (allocations needing more cells than the heap: replayed as whole-heap requests under
    ``oversize="clip"``) and ``auto_granularity``."""
    events = read_trace(resolve_trace(path))
    auto = auto_granularity(events, cells)
    g = auto if granularity == "auto" else int(granularity)
    allocs = events[:, 0] == OP_ALLOC
    return {"events": len(events), "allocs": int(allocs.sum()), "frees": int((~allocs).sum()),
            "max_alloc_bytes": int(events[allocs, 2].max()) if allocs.any() else 0,
            "peak_live_bytes": peak_live(events), "granularity": g, "peak_live_cells": peak_live(events, g),
            "clipped": int((cells_needed(events, g) > cells).sum()), "auto_granularity": auto}


def trace_requests(events: np.ndarray, granularity: int, cells: int, min_bytes: int = 0, drop_oversize: bool = False):
    """Per-event arrays of the replay: op (0/1), size in cells (allocs), and ``ref``: the trace-wide
    allocation index of the event's block (its own index for an alloc, its alloc's for a free).

    Allocations below ``min_bytes`` (and, with ``drop_oversize``, those needing more than ``cells`` cells) are
    dropped with their frees; the others' sizes are clipped to [1, cells]."""
    ev = np.array(events, dtype=np.int64).reshape(-1, 3)  # a copy: the cached trace stays read-only
    if min_bytes > 0 or drop_oversize:
        drop_alloc = (ev[:, 0] == OP_ALLOC) & (ev[:, 2] < min_bytes)
        if drop_oversize:
            drop_alloc |= cells_needed(ev, granularity) > cells
        keep = np.ones(len(ev), dtype=bool)
        dropped: set[int] = set()
        for i, (op, bid, _) in enumerate(ev.tolist()):
            if op == OP_ALLOC:
                if drop_alloc[i]:
                    dropped.add(bid)
                    keep[i] = False
                else:
                    dropped.discard(bid)
            elif bid in dropped:
                dropped.discard(bid)
                keep[i] = False
        ev = ev[keep]
    op = ev[:, 0]
    size = np.clip(-(-ev[:, 2] // granularity), 1, cells)
    size[op == OP_FREE] = 0
    ref = np.zeros(len(ev), dtype=np.int64)
    cur: dict[int, int] = {}
    k = 0
    for i, (o, bid, _) in enumerate(ev.tolist()):
        if o == OP_ALLOC:
            cur[bid] = k
            ref[i] = k
            k += 1
        else:
            ref[i] = cur.pop(bid)
    return op, size, ref


_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_WARNED: set[tuple] = set()
_AUTO: dict[tuple, int] = {}
OVERSIZE = ("clip", "error", "drop")


class TraceWarning(UserWarning):
    """A trace replays with a change a user should know of (allocations larger than the heap clipped)."""


def _read_cached(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """read_trace(with_lines=True), memoised on (path, size, mtime): many envs replay the same few traces."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        if len(_CACHE) >= 16:
            _CACHE.clear()
        _CACHE[key] = read_trace(path, with_lines=True)
        for a in _CACHE[key]:
            a.setflags(write=False)
    return _CACHE[key]


def _check_oversize(path: Path, events: np.ndarray, lines: np.ndarray, granularity: int, cells: int,
                    min_bytes: int, oversize: str) -> None:
    """Allocations that need more cells than the heap has: an error (``oversize="error"``), a warning once per
    (trace, heap, granularity) for ``"clip"``, nothing for ``"drop"`` (trace_requests drops them)."""
    over = (cells_needed(events, granularity) > cells) & (events[:, 2] >= min_bytes)
    if oversize == "drop" or not over.any():
        return
    i = int(np.flatnonzero(over)[0])
    first = (f"{path}, line {int(lines[i])}: allocation of {int(events[i, 2])} bytes needs "
             f"{int(cells_needed(events[i:i + 1], granularity)[0])} cells at granularity {granularity} B/cell, "
             f"more than the heap's {cells} cells ({int(over.sum())} of {int((events[:, 0] == OP_ALLOC).sum())} "
             "allocations do)")
    if oversize == "error":
        raise TraceError(f"{first}; use more cells or a larger granularity, or set the stream parameter "
                         "oversize='clip' (replay them as whole-heap requests) or 'drop' (skip them and their frees)")
    key = (str(path), cells, granularity, min_bytes)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"{first}: replayed clipped to {cells} cells (oversize='clip'); set oversize='error' to "
                      "refuse such a trace or 'drop' to skip those allocations", TraceWarning, stacklevel=3)


def _auto_cached(path: Path, events: np.ndarray, cells: int) -> int:
    key = (str(path.resolve()), path.stat().st_mtime_ns, cells)
    if key not in _AUTO:
        _AUTO[key] = auto_granularity(events, cells)
    return _AUTO[key]


class TraceStream(RequestStream):
    """Replays a recorded trace (see the module docstring); stream ``"trace"``."""

    SALT = 23
    PARAMS = {"path": PATH, "granularity": one_of(INT, choice("auto")), "min_bytes": INT, "window": optional(INT),
              "random_start": BOOL,
              "oversize": STR}

    def __init__(self, batch, cells, device="cpu", path: str = "python_json", granularity: int | str = "auto",
                 min_bytes: int = 0, window: int | None = None, random_start: bool = False, oversize: str = "clip"):
        super().__init__(batch, cells, device)
        if granularity != "auto" and (isinstance(granularity, str) or int(granularity) < 1):
            raise ValueError(f"granularity must be >= 1 byte per cell or 'auto', got {granularity!r}")
        if window is not None and int(window) < 1:
            raise ValueError(f"window must be a positive number of events (or None for all), got {window}")
        if oversize not in OVERSIZE:
            raise ValueError(f"unknown oversize {oversize!r} (what to do with allocations larger than the heap); "
                             f"choose one of {', '.join(OVERSIZE)}")
        self.path = resolve_trace(path)
        self.min_bytes = int(min_bytes)
        self.window = None if window is None else int(window)
        self.random_start = bool(random_start)
        events, lines = _read_cached(self.path)
        self.granularity = _auto_cached(self.path, events, self.cells) if granularity == "auto" else int(granularity)
        _check_oversize(self.path, events, lines, self.granularity, self.cells, self.min_bytes, oversize)
        op, size, ref = trace_requests(events, self.granularity, self.cells, self.min_bytes, oversize == "drop")
        E = len(op)
        alloc_events = np.flatnonzero(op == OP_ALLOC)
        if len(alloc_events) == 0:
            raise ValueError(f"trace {self.path} has no allocation left to replay (min_bytes={min_bytes})")
        d = self.device
        self.E = E
        self.op = torch.as_tensor(op, device=d)
        self.size = torch.as_tensor(size, device=d)
        self.ref = torch.as_tensor(ref, device=d)
        self.alloc_events = torch.as_tensor(alloc_events, device=d)
        # next_alloc[i]: first alloc event at or after i (E if none); index E is a sentinel
        nxt = np.full(E + 1, E, dtype=np.int64)
        nxt[alloc_events] = alloc_events
        nxt = np.minimum.accumulate(nxt[::-1])[::-1]
        self.next_alloc = torch.as_tensor(nxt.copy(), device=d)
        # skipping frees of blocks allocated before the segment start: the first j >= i with key[j] >= a0,
        # key = ref for frees and +inf for allocs, found by binary lifting over a sparse table of range maxima
        big = np.iinfo(np.int64).max
        key = np.where(op == OP_ALLOC, big, ref)
        levels = [np.concatenate([key, [big]])]
        while (1 << len(levels)) <= E:
            prev, h = levels[-1], 1 << (len(levels) - 1)
            shifted = np.concatenate([prev[h:], np.full(h, big)])
            levels.append(np.maximum(prev, shifted))
        self.table = torch.as_tensor(np.stack(levels), device=d)  # [L, E + 1]
        B = self.batch
        z = torch.zeros(B, dtype=torch.long, device=d)
        self.start, self.end, self.ptr, self.base, self.a0 = z.clone(), z.clone(), z.clone(), z.clone(), z.clone()
        self.rng = CounterRNG(B, d)

    def reset(self, heaps, rows, seed, episode):
        if self.random_start:
            self.rng.reseed(rows, seed, episode, self.SALT)
            u = self.rng.uniform(rows)
            n_alloc = self.alloc_events.numel()
            k = (u * n_alloc).long().clamp(max=n_alloc - 1)
            start = self.alloc_events[k]
            self.a0[rows] = k
        else:
            start = torch.zeros_like(rows)
            self.a0[rows] = 0
        self.start[rows] = start
        end = start + (self.window if self.window is not None else self.E)
        self.end[rows] = end.clamp(max=self.E)
        self.ptr[rows] = start
        self.base[rows] = heaps.clock(rows)

    def _skip_dropped(self, p: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        """First event index j >= p that is an alloc or a free of a block allocated at or after a0."""
        for lvl in range(self.table.shape[0] - 1, -1, -1):
            h = 1 << lvl
            q = p.clamp(max=self.E)
            jump = (self.table[lvl, q] < a0) & (p + h <= self.E)
            p = torch.where(jump, p + h, p)
        return p

    def next(self, heaps, rows):
        p, a0, end = self.ptr[rows], self.a0[rows], self.end[rows]
        wrap = self.next_alloc[p.clamp(max=self.E)] >= end
        p = torch.where(wrap, p, self._skip_dropped(p, a0))
        pc = p.clamp(max=self.E - 1)
        ev_op, ev_size, ev_ref = self.op[pc], self.size[pc], self.ref[pc]
        is_alloc = ~wrap & (ev_op == OP_ALLOC)
        is_free = ~wrap & (ev_op == OP_FREE)
        # the block a free names: the (base + ref - a0)-th allocation of the episode
        ordinal = self.base[rows] + ev_ref - a0
        hit = (heaps.block_seq[rows] == ordinal[:, None]) & heaps.live[rows]
        slot = torch.where(hit.any(1), hit.long().argmax(1), -1)
        op = torch.where(wrap, FREE_ALL, torch.where(is_alloc, ALLOC, FREE))
        size = torch.where(is_alloc, ev_size, 0)
        block = torch.where(is_free, slot, -1)
        # pointers: after a wrap the segment restarts, and its allocation ordinals continue from the request clock
        self.ptr[rows] = torch.where(wrap, self.start[rows], p + 1)
        self.base[rows] = torch.where(wrap, heaps.clock(rows), self.base[rows])
        return Requests(op, size, block)

    def state_dict(self):
        return {"start": self.start.clone(), "end": self.end.clone(), "ptr": self.ptr.clone(),
                "base": self.base.clone(), "a0": self.a0.clone(), "rng": self.rng.state_dict()}

    def load_state_dict(self, state):
        for k in ("start", "end", "ptr", "base", "a0"):
            getattr(self, k).copy_(state[k])
        self.rng.load_state_dict(state["rng"])


__all__ = ["HEADER", "OVERSIZE", "TraceError", "TraceStream", "TraceWarning", "auto_granularity", "block_bytes",
           "cells_needed", "parse_valgrind_log", "peak_live", "read_trace", "resolve_trace", "shipped_traces",
           "trace_header", "trace_requests", "trace_stats", "valgrind_log_process", "validate_events", "write_trace",
           "DATA_DIR"]
