"""Placement rules (first / next / best / worst / second fit) against a slow reference and hand-worked
placements on Mandal & Rohil's pre-holed heap."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamalloc.alloc.heap import ALIGNS, RULES, FreeRuns, HeapBatch, choose_run, place_address

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------------------
# slow reference: walk the bitmap, list the holes, apply the rule as written in words
# --------------------------------------------------------------------------------------------------
def holes(bits: list[bool]) -> list[tuple[int, int]]:
    out, start = [], None
    for c, taken in enumerate(bits + [True]):
        if not taken and start is None:
            start = c
        elif taken and start is not None:
            out.append((start, c - start))
            start = None
    return out


def ref_place(bits: list[bool], size: int, rule: str, rover: int = 0, align: str = "start") -> int:
    fit = [(s, n) for s, n in holes(bits) if n >= size]  # address order
    if not fit:
        return -1
    if rule == "first":
        s, n = fit[0]
    elif rule == "best":
        s, n = min(fit, key=lambda h: (h[1], h[0]))  # smallest, ties to the lowest address
    elif rule == "worst":
        s, n = min(fit, key=lambda h: (-h[1], h[0]))  # largest, ties to the lowest address
    elif rule == "second":
        s, n = fit[1] if len(fit) > 1 else fit[0]
    elif rule == "next":
        later = [(s, n) for s, n in fit if s + n > rover]
        s, n = later[0] if later else fit[0]
    else:
        raise AssertionError(rule)
    return s if align == "start" else s + n - size


def ref_sequence(bits: list[bool], sizes: list[int], rule: str, rover: int = 0,
                 align: str = "start") -> list[int]:
    """Place the requests one after another (no frees); a request that fits nowhere is skipped."""
    bits, out, N = list(bits), [], len(bits)
    for size in sizes:
        a = ref_place(bits, size, rule, rover, align)
        out.append(a)
        if a >= 0:
            for c in range(a, a + size):
                assert not bits[c]
                bits[c] = True
            rover = (a + size) % N
    return out


def heap_from_bits(bits_rows: list[list[bool]]) -> HeapBatch:
    """A HeapBatch whose occupancy equals the bitmaps (one block per occupied run)."""
    h = HeapBatch(len(bits_rows), len(bits_rows[0]))
    for b, bits in enumerate(bits_rows):
        occupied = holes([not x for x in bits])
        for s, n in occupied:
            assert h.allocate(s, n, heaps=[b]).tolist() == [True]
    assert h.occ.tolist() == bits_rows
    return h


# --------------------------------------------------------------------------------------------------
# (a) every rule agrees with the reference on random bitmaps, sizes and rovers
# --------------------------------------------------------------------------------------------------
@st.composite
def cases(draw):
    batch = draw(st.integers(1, 4))
    N = draw(st.integers(2, 40))
    p = draw(st.sampled_from([0.15, 0.4, 0.7]))
    bits = [[draw(st.floats(0, 1)) < p for _ in range(N)] for _ in range(batch)]
    size = draw(st.lists(st.one_of(st.integers(1, 4), st.integers(1, N)), min_size=batch, max_size=batch))
    rover = draw(st.lists(st.integers(0, N - 1), min_size=batch, max_size=batch))
    return bits, size, rover


@settings(max_examples=100, deadline=None)
@given(case=cases())
def test_rules_match_reference(case):
    bits, size, rover = case
    runs = FreeRuns.of(torch.tensor(bits))
    size_t, rover_t = torch.tensor(size), torch.tensor(rover)
    for rule in RULES:
        idx, found = choose_run(runs, size_t, rule, rover_t)
        for align in ALIGNS:
            got = place_address(runs, size_t, rule, rover=rover_t, align=align).tolist()
            want = [ref_place(bt, s, rule, r, align) for bt, s, r in zip(bits, size, rover, strict=True)]
            assert got == want, (rule, align)
        # choose_run: found iff something fits, and the index names a fitting run of the same heap
        assert found.tolist() == [any(n >= s for _, n in holes(bt)) for bt, s in zip(bits, size, strict=True)]
        for b in range(len(bits)):
            if found[b]:
                i = int(idx[b])
                assert int(runs.heap[i]) == b and int(runs.length[i]) >= size[b]
                assert int(runs.start[i]) == ref_place(bits[b], size[b], rule, rover[b])


@settings(max_examples=50, deadline=None)
@given(N=st.integers(4, 32), data=st.data())
def test_rule_sequences_on_heap_match_reference(N, data):
    """Placing a run of requests through HeapBatch (which moves the next-fit rover) gives the reference's
    addresses, for every rule and alignment, with the heaps of a batch independent of each other."""
    batch = 2
    bits = [[data.draw(st.booleans()) for _ in range(N)] for _ in range(batch)]
    sizes = [data.draw(st.lists(st.integers(1, max(1, N // 3)), min_size=1, max_size=12)) for _ in range(batch)]
    steps = max(len(s) for s in sizes)
    for rule in RULES:
        for align in ALIGNS:
            h = heap_from_bits(bits)
            h.rover.zero_()
            got = [[] for _ in range(batch)]
            for t in range(steps):
                rows = [b for b in range(batch) if t < len(sizes[b])]
                size = torch.tensor([sizes[b][t] for b in rows])
                runs = FreeRuns.of(h.occ[rows])
                addr = place_address(runs, size, rule, rover=h.rover[rows], align=align)
                for b, a in zip(rows, addr.tolist(), strict=True):
                    got[b].append(a)
                ok = addr >= 0
                rows_ok = torch.tensor(rows)[ok]
                placed = h.allocate(addr[ok], size[ok], heaps=rows_ok)
                assert placed.all()
            want = [ref_sequence(bits[b], sizes[b], rule, 0, align) for b in range(batch)]
            assert got == want, (rule, align)


def test_full_heaps_give_minus_one():
    runs = FreeRuns.of(torch.ones((2, 6), dtype=torch.bool))
    for rule in RULES:
        for align in ALIGNS:
            assert place_address(runs, torch.tensor([1, 3]), rule, rover=torch.tensor([0, 2]),
                                 align=align).tolist() == [-1, -1]


def test_mixed_batch_some_heaps_without_fit():
    # heap 0 has a hole of 3 at 2; heap 1 is full; heap 2 has holes of 1 at 0 and 4 at 6
    bits = [[True, True, False, False, False, True, True, True, True, True],
            [True] * 10,
            [False, True, True, True, True, True, False, False, False, False]]
    runs = FreeRuns.of(torch.tensor(bits))
    size = torch.tensor([3, 1, 2])
    assert place_address(runs, size, "first").tolist() == [2, -1, 6]
    assert place_address(runs, size, "first", align="end").tolist() == [2, -1, 8]
    assert place_address(runs, torch.tensor([4, 1, 1]), "best").tolist() == [-1, -1, 0]
    assert place_address(runs, torch.tensor([1, 1, 1]), "worst").tolist() == [2, -1, 6]
    assert place_address(runs, torch.tensor([1, 1, 1]), "second").tolist() == [2, -1, 6]
    assert place_address(runs, torch.tensor([1, 1, 1]), "next", rover=torch.tensor([5, 0, 1])).tolist() == [
        2, -1, 6]
    assert place_address(runs, torch.tensor([1, 1, 1]), "next", rover=torch.tensor([9, 0, 0])).tolist() == [
        2, -1, 0]


# --------------------------------------------------------------------------------------------------
# (b) Mandal & Rohil's pre-holed heap, worked by hand
# --------------------------------------------------------------------------------------------------
# N = 100, occupied 5-14, 25-29, 40-54, 65-69, 80-94.
# Holes (start, length): (0,5) (15,10) (30,10) (55,10) (70,10) (95,5): 50 free cells, largest hole 10,
# so the requests of 12 and 11 fit nowhere under any rule (-1, and nothing changes).
MANDAL_OCCUPIED = [(5, 10), (25, 5), (40, 15), (65, 5), (80, 15)]
MANDAL_REQUESTS = [8, 12, 5, 9, 11, 4, 6]
MANDAL_EXPECTED = {
    # first: 8 -> 15 (first hole >= 8; leaves (23,2)); 12 fails; 5 -> 0 (the 5-hole at 0 fits exactly);
    # 9 -> 30 (leaves (39,1)); 11 fails; 4 -> 55 (leaves (59,6)); 6 -> 59.
    "first": [15, -1, 0, 30, -1, 55, 59],
    # best: 8 -> 15 (four 10-holes tie, lowest address); 12 fails; 5 -> 0 (5-holes at 0 and 95 tie);
    # 9 -> 30 (10-holes at 30, 55, 70 tie); 11 fails; 4 -> 95 (the 5-hole is now the smallest that
    # fits, ahead of 55 and 70); 6 -> 55 (10-holes at 55 and 70 tie).
    "best": [15, -1, 0, 30, -1, 95, 55],
    # worst: 8 -> 15 (10-holes tie); 12 fails; 5 -> 30 (largest is now 10 at 30); 9 -> 55 (10 at 55);
    # 11 fails; 4 -> 70 (the last 10-hole; leaves (74,6)); 6 -> 74 (the 6-hole is now the largest).
    "worst": [15, -1, 30, 55, -1, 70, 74],
    # second: 8 -> 30 (fitting 15, 30, 55, 70: the second); 12 fails; 5 -> 15 (fitting 0, 15, 55, 70, 95;
    # leaves (20,5)); 9 -> 70 (fitting 55, 70); 11 fails; 4 -> 20 (fitting 0, 20, 55, 95);
    # 6 -> 55 (only 55 fits: falls back to the first).
    "second": [30, -1, 15, 70, -1, 20, 55],
    # next, rover 0: 8 -> 15 (first fitting hole ending after 0; rover 23); 12 fails; 5 -> 30 (the 0-hole
    # ends at 5 <= 23, (23,2) is too small; rover 35); 9 -> 55 (rover 64); 11 fails; 4 -> 70 (holes at 0,
    # 35 end before 64, (64,1) too small; rover 74); 6 -> 74 (the rest of that hole: (74,6) ends at 80 > 74).
    "next": [15, -1, 30, 55, -1, 70, 74],
}


def mandal_heap(batch: int = 1) -> HeapBatch:
    h = HeapBatch(batch, 100)
    for a, s in MANDAL_OCCUPIED:
        assert h.allocate(a, s).all()
    return h


def test_mandal_heap_layout():
    h = mandal_heap()
    runs = FreeRuns.of(h.occ)
    assert list(zip(runs.start.tolist(), runs.length.tolist(), strict=True)) == [(0, 5), (15, 10), (30, 10), (55, 10),
                                                                    (70, 10), (95, 5)]
    assert int(runs.free_cells()) == 50
    assert int(h.rover[0]) == 95  # just past the last block placed (80-94)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("rover", [0, None])  # None: keep the rover the construction left (95)
def test_mandal_requests_hand_worked(rule, rover):
    h = mandal_heap(batch=2)  # two identical heaps: the batch must treat them alike
    if rover is not None:
        h.rover.fill_(rover)
    bits = h.occ[0].tolist()
    start_rover = int(h.rover[0])
    got = []
    for size in MANDAL_REQUESTS:
        before = h.occ.clone()
        addr = place_address(FreeRuns.of(h.occ), torch.tensor([size, size]), rule, rover=h.rover)
        assert addr[0] == addr[1]
        a = int(addr[0])
        got.append(a)
        if a >= 0:
            assert h.allocate(addr, size).all()
            assert int(h.rover[0]) == (a + size) % 100
        else:
            assert torch.equal(h.occ, before)
    assert got == MANDAL_EXPECTED[rule]
    # the hand-worked lists agree with the slow reference
    assert ref_sequence(bits, MANDAL_REQUESTS, rule, start_rover) == MANDAL_EXPECTED[rule]
    # every successful request got its cells: 50 free - (8 + 5 + 9 + 4 + 6) = 18 free at the end
    assert int(h.used[0]) == 50 + 32
    assert int(h.n_allocs[0]) == len(MANDAL_OCCUPIED) + 5


def test_mandal_align_end():
    # align="end" puts the block at the end of the chosen hole: first fit, 8 -> 17 (15 + 10 - 8)
    bits = mandal_heap().occ[0].tolist()
    h = mandal_heap()
    got = []
    for size in MANDAL_REQUESTS:
        a = int(place_address(FreeRuns.of(h.occ), torch.tensor([size]), "first", align="end")[0])
        got.append(a)
        if a >= 0:
            h.allocate(a, size)
    # 8 -> 17 (hole 15-24, leaves (15,2)); 12 fails; 5 -> 0; 9 -> 31 (hole 30-39, leaves (30,1));
    # 11 fails; 4 -> 61 (hole 55-64, leaves (55,6)); 6 -> 55.
    assert got == [17, -1, 0, 31, -1, 61, 55]
    assert got == ref_sequence(bits, MANDAL_REQUESTS, "first", align="end")


# --------------------------------------------------------------------------------------------------
# (c) errors
# --------------------------------------------------------------------------------------------------
def test_unknown_rule_and_alignment_raise():
    runs = FreeRuns.of(torch.zeros((1, 8), dtype=torch.bool))
    size = torch.tensor([2])
    with pytest.raises(ValueError, match=r"unknown placement heuristic 'fastest'.*first"):
        place_address(runs, size, "fastest")
    with pytest.raises(ValueError, match="unknown placement heuristic"):
        choose_run(runs, size, "First")
    with pytest.raises(ValueError, match=r"unknown alignment 'middle'"):
        place_address(runs, size, "first", align="middle")
    with pytest.raises(ValueError, match="rover"):
        place_address(runs, size, "next")
