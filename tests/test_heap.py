"""Invariants of the batched heap simulator (HeapBatch, FreeRuns, heap_metrics).

The property tests drive a small batch of heaps with random operation sequences and compare, after every
operation, the tensors against a plain-Python model of the heaps and against slow cell-by-cell scans.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamalloc.alloc.heap import FreeRuns, HeapBatch, heap_metrics

B = 3
pytestmark = pytest.mark.usefixtures("single_thread")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------------
# plain-Python model and slow scans
# --------------------------------------------------------------------------------------------------
class Model:
    """What each heap should hold: live blocks {slot: (start, size, seq)}, allocation count, rover."""

    def __init__(self, batch: int, cells: int):
        self.N = cells
        self.blocks = [dict() for _ in range(batch)]
        self.n_allocs = [0] * batch
        self.rover = [0] * batch

    def bitmap(self, b: int) -> list[bool]:
        bits = [False] * self.N
        for start, size, _ in self.blocks[b].values():
            for c in range(start, start + size):
                assert not bits[c], f"model blocks overlap at cell {c}"
                bits[c] = True
        return bits

    def window_free(self, b: int, addr: int, size: int) -> bool:
        bits = self.bitmap(b)
        return addr + size <= self.N and not any(bits[addr:addr + size])


def slow_runs(bits: list[bool]) -> list[tuple[int, int]]:
    """Maximal free runs (start, length) of one bitmap, by walking the cells."""
    runs, c, N = [], 0, len(bits)
    while c < N:
        if bits[c]:
            c += 1
            continue
        s = c
        while c < N and not bits[c]:
            c += 1
        runs.append((s, c - s))
    return runs


def slow_address_mask(bits: list[bool], size: int) -> list[bool]:
    N = len(bits)
    return [a + size <= N and not any(bits[a:a + size]) for a in range(N)]


def slow_window_free(bits: list[bool], addr: int, size: int) -> bool:
    return addr + size <= len(bits) and all(not bits[c] for c in range(addr, addr + size))


def check_runs(runs: FreeRuns, bitmaps: list[list[bool]]) -> None:
    """The ragged run table equals the slow scan of every heap: same runs, maximal, in address order."""
    N = len(bitmaps[0])
    heap, start, length = runs.heap.tolist(), runs.start.tolist(), runs.length.tolist()
    expect = [(b, s, n) for b, bits in enumerate(bitmaps) for s, n in slow_runs(bits)]
    assert list(zip(heap, start, length, strict=True)) == expect
    counts = [len(slow_runs(bits)) for bits in bitmaps]
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    assert runs.offsets.tolist() == offsets
    assert runs.counts().tolist() == counts
    assert runs.largest().tolist() == [max([n for _, n in slow_runs(bits)], default=0) for bits in bitmaps]
    assert runs.free_cells().tolist() == [bits.count(False) for bits in bitmaps]
    assert runs.cells == N
    # maximal and covering: every run is bounded by occupied cells or the edges, and the runs are exactly
    # the free cells
    for b, s, n in zip(heap, start, length, strict=True):
        bits = bitmaps[b]
        assert n >= 1
        assert not any(bits[s:s + n])
        assert s == 0 or bits[s - 1]
        assert s + n == N or bits[s + n]
    for b, bits in enumerate(bitmaps):
        covered = sorted(c for hb, s, n in zip(heap, start, length, strict=True) if hb == b for c in range(s, s + n))
        assert covered == [c for c in range(N) if not bits[c]]


def check_heaps(h: HeapBatch, m: Model) -> None:
    N = h.cells
    for b in range(h.batch):
        blocks = m.blocks[b]
        bits = m.bitmap(b)  # asserts the model's blocks do not overlap
        live = set(h.live[b].nonzero().squeeze(1).tolist())
        assert live == set(blocks), f"heap {b}: live slots {sorted(live)} != model {sorted(blocks)}"
        # block table
        for slot, (start, size, seq) in blocks.items():
            assert int(h.block_start[b, slot]) == start
            assert int(h.block_size[b, slot]) == size
            assert int(h.block_seq[b, slot]) == seq
        seq_dead = [int(h.block_seq[b, s]) for s in range(N) if s not in blocks]
        assert all(v == -1 for v in seq_dead)
        # no overlap, inside the heap (on the tensors' own table)
        spans = sorted((int(h.block_start[b, s]), int(h.block_size[b, s])) for s in live)
        for (s0, n0), (s1, _) in zip(spans, spans[1:], strict=False):
            assert s0 + n0 <= s1
        assert all(0 <= s and s + n <= N for s, n in spans)
        # occupancy and owner maps
        assert h.occ[b].tolist() == bits
        owner = [-1] * N
        for slot, (start, size, _) in blocks.items():
            for c in range(start, start + size):
                owner[c] = slot
        assert h.owner[b].tolist() == owner
        # counters
        assert int(h.used[b]) == sum(size for _, size, _ in blocks.values())
        assert int(h.n_live[b]) == len(blocks)
        assert int(h.n_allocs[b]) == m.n_allocs[b]
        assert int(h.rover[b]) == m.rover[b]
        # perm / pos: a permutation and its inverse, live slots first
        perm, pos = h.perm[b].tolist(), h.pos[b].tolist()
        assert sorted(perm) == list(range(N))
        assert all(pos[perm[j]] == j for j in range(N))
        assert set(perm[: len(blocks)]) == set(blocks)
        # blocks() listing
        assert h.blocks(b) == sorted(((s, a, n) for s, (a, n, _) in blocks.items()), key=lambda t: t[1])
    assert h.occ.dtype == torch.bool and h.owner.dtype == torch.int32


def check_views(h: HeapBatch, m: Model, data) -> None:
    """FreeRuns, address masks, window checks and metrics against slow scans of the model."""
    N = h.cells
    bitmaps = [m.bitmap(b) for b in range(h.batch)]
    runs = FreeRuns.of(h.occ)
    check_runs(runs, bitmaps)
    size = data.draw(st.lists(st.integers(1, N), min_size=h.batch, max_size=h.batch), label="mask sizes")
    mask = runs.address_mask(torch.tensor(size))
    assert mask.shape == (h.batch, N) and mask.dtype == torch.bool
    assert mask.tolist() == [slow_address_mask(bits, s) for bits, s in zip(bitmaps, size, strict=True)]
    addr = data.draw(st.lists(st.integers(0, N - 1), min_size=h.batch, max_size=h.batch), label="win addr")
    wf = runs.window_free(torch.tensor(addr), torch.tensor(size))
    assert wf.tolist() == [slow_window_free(bits, a, s) for bits, a, s in zip(bitmaps, addr, size, strict=True)]
    met = heap_metrics(h, runs)
    for b, bits in enumerate(bitmaps):
        free, rs = bits.count(False), slow_runs(bits)
        largest = max([n for _, n in rs], default=0)
        assert int(met["free_cells"][b]) == free
        assert int(met["largest_free"][b]) == largest
        assert int(met["free_runs"][b]) == len(rs)
        assert int(met["allocations"][b]) == m.n_allocs[b]
        assert float(met["frag_largest"][b]) == pytest.approx(1 - largest / free if free else 0.0, abs=1e-6)
        assert float(met["frag_runs"][b]) == pytest.approx(len(rs) / N if 0 < free < N else 0.0, abs=1e-6)
        assert float(met["utilisation"][b]) == pytest.approx((N - free) / N, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# random operation sequences
# --------------------------------------------------------------------------------------------------
OPS = ["alloc"] * 6 + ["free"] * 4 + ["free_all", "compact", "reset"]


def draw_rows(data, batch: int, among: list[int] | None = None):
    """A distinct subset of heap rows (or None meaning all rows), and the rows it names."""
    pool = list(range(batch)) if among is None else among
    if among is None and data.draw(st.booleans(), label="all heaps"):
        return None, pool
    rows = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True), label="rows")
    return rows, rows


def do_alloc(h: HeapBatch, m: Model, data) -> None:
    N = h.cells
    heaps, rows = draw_rows(data, h.batch)
    small = st.integers(1, max(1, N // 4))
    sizes_st = st.one_of(small, small, st.integers(1, N))
    if data.draw(st.booleans(), label="broadcast"):
        a, s = data.draw(st.integers(0, N - 1)), data.draw(sizes_st)
        addr, size, arg_a, arg_s = [a] * len(rows), [s] * len(rows), a, s
    else:
        addr = data.draw(st.lists(st.integers(0, N - 1), min_size=len(rows), max_size=len(rows)))
        size = data.draw(st.lists(sizes_st, min_size=len(rows), max_size=len(rows)))
        arg_a, arg_s = torch.tensor(addr), torch.tensor(size)
    before = [set(m.blocks[b]) for b in rows]
    expect = [m.window_free(b, a, s) for b, a, s in zip(rows, addr, size, strict=True)]
    ok = h.allocate(arg_a, arg_s, heaps=heaps)
    assert ok.dtype == torch.bool and ok.tolist() == expect
    for b, a, s, okb, old in zip(rows, addr, size, expect, before, strict=True):
        if not okb:
            continue
        new = set(h.live[b].nonzero().squeeze(1).tolist()) - old
        assert len(new) == 1, f"one new live slot expected in heap {b}, got {new}"
        slot = new.pop()
        m.blocks[b][slot] = (a, s, m.n_allocs[b])
        m.n_allocs[b] += 1
        m.rover[b] = (a + s) % N


def do_free(h: HeapBatch, m: Model, data) -> None:
    nonempty = [b for b in range(h.batch) if m.blocks[b]]
    if not nonempty:
        return
    heaps, rows = draw_rows(data, h.batch, among=nonempty)
    slots = [data.draw(st.sampled_from(sorted(m.blocks[b])), label="slot") for b in rows]
    h.free(torch.tensor(slots), heaps=heaps)
    for b, s in zip(rows, slots, strict=True):
        del m.blocks[b][s]


def do_compact(h: HeapBatch, m: Model, data) -> None:
    heaps, rows = draw_rows(data, h.batch)
    h.compact(heaps)
    for b in rows:
        order = sorted(m.blocks[b].items(), key=lambda kv: kv[1][0])
        at = 0
        for slot, (_, size, seq) in order:
            m.blocks[b][slot] = (at, size, seq)
            at += size
        m.rover[b] = at % h.cells
        # the blocks keep their order, slots and sizes; one free run remains, at the end
        assert h.blocks(b) == [(slot, st_, sz) for slot, (st_, sz, _) in
                               sorted(m.blocks[b].items(), key=lambda kv: kv[1][0])]
        runs = slow_runs(h.occ[b].tolist())
        assert runs == ([(at, h.cells - at)] if at < h.cells else [])


def do_clear(h: HeapBatch, m: Model, data, reset: bool) -> None:
    heaps, rows = draw_rows(data, h.batch)
    (h.reset if reset else h.free_all)(heaps)
    for b in rows:
        m.blocks[b].clear()
        if reset:
            m.n_allocs[b] = 0
            m.rover[b] = 0
        # an empty heap: nothing occupied, one run covering everything
        assert not h.occ[b].any() and (h.owner[b] == -1).all()
        assert int(h.used[b]) == 0 and int(h.n_live[b]) == 0 and not h.live[b].any()
        assert slow_runs(h.occ[b].tolist()) == [(0, h.cells)]


@SETTINGS
@given(N=st.integers(8, 40), data=st.data())
def test_random_operation_sequences_keep_invariants(N, data):
    h, m = HeapBatch(B, N), Model(B, N)
    check_heaps(h, m)
    n_ops = data.draw(st.integers(1, 25), label="n_ops")
    for _ in range(n_ops):
        op = data.draw(st.sampled_from(OPS), label="op")
        v0 = h.version
        if op == "alloc":
            do_alloc(h, m, data)
        elif op == "free":
            do_free(h, m, data)
        elif op == "compact":
            do_compact(h, m, data)
        else:
            do_clear(h, m, data, reset=(op == "reset"))
        assert h.version >= v0
        check_heaps(h, m)
        check_views(h, m, data)


@SETTINGS
@given(N=st.integers(8, 40), data=st.data())
def test_fill_then_free_everything_coalesces(N, data):
    """Fill a heap with consecutive blocks, free them in random order: the end is one run of N cells."""
    h = HeapBatch(1, N)
    sizes, at = [], 0
    while at < N:
        s = data.draw(st.integers(1, min(5, N - at)))
        assert h.allocate(at, s).tolist() == [True]
        sizes.append(s)
        at += s
    assert bool(h.occ.all()) and int(h.used[0]) == N
    assert FreeRuns.of(h.occ).start.numel() == 0
    assert h.allocate(0, 1).tolist() == [False]  # a full heap takes nothing
    slots = [s for s, _, _ in h.blocks(0)]
    order = data.draw(st.permutations(slots))
    for s in order:
        h.free(s, heaps=[0])
    assert not h.occ.any() and int(h.used[0]) == 0
    runs = FreeRuns.of(h.occ)
    assert list(zip(runs.start.tolist(), runs.length.tolist(), strict=True)) == [(0, N)]


# --------------------------------------------------------------------------------------------------
# FreeRuns on arbitrary bitmaps (denser coverage than through allocations)
# --------------------------------------------------------------------------------------------------
@st.composite
def bitmaps(draw, max_batch=4, max_cells=40):
    batch = draw(st.integers(1, max_batch))
    N = draw(st.integers(2, max_cells))
    p = draw(st.sampled_from([0.1, 0.4, 0.7, 0.95]))
    rows = [[draw(st.floats(0, 1)) < p for _ in range(N)] for _ in range(batch)]
    return rows


@settings(max_examples=100, deadline=None)
@given(bits=bitmaps(), data=st.data())
def test_free_runs_queries_match_slow_scan(bits, data):
    Bn, N = len(bits), len(bits[0])
    occ = torch.tensor(bits)
    runs = FreeRuns.of(occ)
    check_runs(runs, bits)
    size = data.draw(st.lists(st.integers(1, N), min_size=Bn, max_size=Bn))
    size_t = torch.tensor(size)
    rs = [slow_runs(b) for b in bits]
    fit = [[(s, n) for s, n in r if n >= sz] for r, sz in zip(rs, size, strict=True)]
    assert runs.fitting(size_t).tolist() == [n >= size[hb] for hb, n in zip(runs.heap.tolist(),
                                                                            runs.length.tolist(), strict=True)]
    assert runs.n_fitting(size_t).tolist() == [len(f) for f in fit]
    k = data.draw(st.lists(st.integers(0, 4), min_size=Bn, max_size=Bn))
    assert runs.kth_fitting(size_t, torch.tensor(k)).tolist() == [f[kk][0] if kk < len(f) else -1
                                                                  for f, kk in zip(fit, k, strict=True)]
    n = data.draw(st.integers(1, 4))
    fs, fl = runs.first_fitting(size_t, n)
    assert fs.tolist() == [[f[i][0] if i < len(f) else 0 for i in range(n)] for f in fit]
    assert fl.tolist() == [[f[i][1] if i < len(f) else 0 for i in range(n)] for f in fit]
    assert runs.address_mask(size_t).tolist() == [slow_address_mask(b, s) for b, s in zip(bits, size, strict=True)]
    addr = data.draw(st.lists(st.integers(0, N - 1), min_size=Bn, max_size=Bn))
    assert runs.window_free(torch.tensor(addr), size_t).tolist() == [
        slow_window_free(b, a, s) for b, a, s in zip(bits, addr, size, strict=True)]
    # rank of the fitting runs: 1, 2, 3, ... within each heap
    fits = runs.fitting(size_t)
    r = runs.rank(fits).tolist()
    seen = [0] * Bn
    for hb, fit_, rr in zip(runs.heap.tolist(), fits.tolist(), r, strict=True):
        seen[hb] += fit_
        assert rr == seen[hb]
    # emptied: the chosen heaps become one run (0, N), the others keep their runs
    mask = data.draw(st.lists(st.booleans(), min_size=Bn, max_size=Bn))
    emp = runs.emptied(torch.tensor(mask))
    check_runs(emp, [[False] * N if mk else b for b, mk in zip(bits, mask, strict=True)])


def test_free_runs_hand_example():
    # cells: 0 1 2 3 4 5 6 7 8 9 ; occupied 2-3 and 7 -> runs (0,2) (4,3) (8,2); second heap full
    occ = torch.zeros((2, 10), dtype=torch.bool)
    occ[0, [2, 3, 7]] = True
    occ[1] = True
    runs = FreeRuns.of(occ)
    assert runs.heap.tolist() == [0, 0, 0]
    assert runs.start.tolist() == [0, 4, 8]
    assert runs.length.tolist() == [2, 3, 2]
    assert runs.offsets.tolist() == [0, 3, 3]
    assert runs.largest().tolist() == [3, 0]
    assert runs.free_cells().tolist() == [7, 0]
    assert runs.address_mask(torch.tensor([2, 1])).tolist() == [
        [True, False, False, False, True, True, False, False, True, False], [False] * 10]


# --------------------------------------------------------------------------------------------------
# compaction, metrics and hand-checked numbers
# --------------------------------------------------------------------------------------------------
def test_compact_hand_example():
    h = HeapBatch(2, 12)
    assert h.allocate([3, 9], [2, 3]).tolist() == [True, True]
    assert h.allocate([7, 0], [4, 2]).tolist() == [True, True]
    assert h.allocate([0, 5], [1, 1]).tolist() == [True, True]
    before = [h.blocks(b) for b in range(2)]
    h.compact(heaps=[0])
    # heap 0: blocks at 0 (1), 3 (2), 7 (4) -> 0, 1, 3; heap 1 untouched
    assert [(st_, sz) for _, st_, sz in h.blocks(0)] == [(0, 1), (1, 2), (3, 4)]
    assert [s for s, _, _ in h.blocks(0)] == [s for s, _, _ in before[0]]
    assert h.blocks(1) == before[1]
    assert h.occ[0].tolist() == [True] * 7 + [False] * 5
    assert int(h.rover[0]) == 7 and int(h.rover[1]) == 6
    h.compact()
    assert h.occ[1].tolist() == [True] * 6 + [False] * 6


def test_metrics_hand_example():
    # Mandal & Rohil's pre-holed heap: 50 free cells in 6 runs, the largest 10
    h = HeapBatch(3, 100)
    for a, s in [(5, 10), (25, 5), (40, 15), (65, 5), (80, 15)]:
        assert h.allocate(a, s, heaps=[0]).tolist() == [True]
    assert h.allocate(0, 100, heaps=[2]).tolist() == [True]  # heap 1 empty, heap 2 full
    met = heap_metrics(h, FreeRuns.of(h.occ))
    assert met["allocations"].tolist() == [5, 0, 1]
    assert met["free_cells"].tolist() == [50, 100, 0]
    assert met["largest_free"].tolist() == [10, 100, 0]
    assert met["free_runs"].tolist() == [6, 1, 0]
    assert met["frag_largest"].tolist() == pytest.approx([0.8, 0.0, 0.0])
    assert met["frag_runs"].tolist() == pytest.approx([0.06, 0.0, 0.0])
    assert met["utilisation"].tolist() == pytest.approx([0.5, 0.0, 1.0])


def test_free_all_keeps_counters_reset_clears_them():
    h = HeapBatch(2, 10)
    h.allocate([2, 4], [3, 6])
    h.free_all([0])
    assert int(h.n_allocs[0]) == 1 and int(h.rover[0]) == 5 and int(h.used[0]) == 0
    assert int(h.used[1]) == 6  # untouched
    h.reset()
    assert h.n_allocs.tolist() == [0, 0] and h.rover.tolist() == [0, 0] and h.used.tolist() == [0, 0]


def test_oldest_block_follows_allocation_order():
    h = HeapBatch(1, 20)
    h.allocate(10, 2)
    h.allocate(0, 3)
    h.allocate(5, 1)
    slots = {st_: s for s, st_, _ in h.blocks(0)}
    assert h._oldest(torch.tensor([0])).tolist() == [slots[10]]
    h.free(slots[10])
    assert h._oldest(torch.tensor([0])).tolist() == [slots[0]]
    h.free_all()
    assert h._oldest(torch.tensor([0])).tolist() == [-1]


def test_state_dict_round_trip():
    h = HeapBatch(2, 16)
    h.allocate([1, 3], [4, 5])
    sd = h.state_dict()
    h.allocate([8, 9], [2, 2])
    h.load_state_dict(sd)
    assert h.blocks(0) == [(0, 1, 4)] and h.blocks(1) == [(0, 3, 5)]
    with pytest.raises(ValueError, match="shape"):
        HeapBatch(2, 8).load_state_dict(sd)


# --------------------------------------------------------------------------------------------------
# errors a caller can cause
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    h = HeapBatch(3, 10)
    with pytest.raises(ValueError, match=r"request size must lie in \[1, 10\].*got 0"):
        h.allocate(0, 0)
    with pytest.raises(ValueError, match=r"request size must lie in \[1, 10\].*got 11"):
        h.allocate(0, 11)
    with pytest.raises(ValueError, match=r"address must lie in \[0, 9\], got -1"):
        h.allocate(-1, 2)
    with pytest.raises(ValueError, match=r"address must lie in \[0, 9\], got 10"):
        h.allocate(10, 1)
    with pytest.raises(ValueError, match="distinct"):
        h.allocate(0, 1, heaps=[1, 1])
    with pytest.raises(ValueError, match="heap index out of range"):
        h.allocate(0, 1, heaps=[3])
    with pytest.raises(ValueError, match="one value per heap"):
        h.allocate([0, 1], 1)
    with pytest.raises(ValueError, match="block 0 is not live in heap 0"):
        h.free(0, heaps=[0])
    with pytest.raises(ValueError, match="block -1 is not live"):
        h.free(-1, heaps=[0])
    with pytest.raises(ValueError, match="block 10 is not live"):
        h.free(10, heaps=[0])
    with pytest.raises(ValueError, match="distinct"):
        h.free([0, 0], heaps=[2, 2])
    with pytest.raises(ValueError, match="distinct"):
        h.free_all([0, 0])
    with pytest.raises(ValueError, match="distinct"):
        h.compact([1, 1])
    with pytest.raises(ValueError, match="batch"):
        HeapBatch(0, 10)
    with pytest.raises(ValueError, match="cells"):
        HeapBatch(1, 1)
    # nothing changed through all of that
    assert not h.occ.any() and h.n_allocs.tolist() == [0, 0, 0] and h.version == 0


def test_failed_calls_change_nothing():
    h = HeapBatch(2, 10)
    h.allocate([0, 0], [3, 3])
    sd = h.state_dict()
    with pytest.raises(ValueError, match="request size"):
        h.allocate([5, 5], [2, 0])  # one bad size: the good row is not allocated either
    slot = h.blocks(0)[0][0]
    with pytest.raises(ValueError, match="not live in heap 1"):
        h.free([slot, (slot + 1) % 10])  # heap 1's slot is not live: heap 0's block stays
    for k, v in sd.items():
        assert torch.equal(getattr(h, k), v), k
    # a window that overlaps or runs past the end fails without raising and without changing anything
    assert h.allocate([2, 8], [2, 3]).tolist() == [False, False]
    for k, v in sd.items():
        assert torch.equal(getattr(h, k), v), k
