"""Request streams: counter-based RNG, determinism and batch independence, the random stream's statistics,
and the structure of Lim & Maddukuri's adversarial scripts (bf-good, wf-good, mixed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamalloc.alloc.heap import FreeRuns, HeapBatch, place_address
from dreamalloc.alloc.workloads import ALLOC, FREE, FREE_ALL, make_stream, stream_names
from dreamalloc.alloc.workloads.base import S_ALLOC, S_FREE_ALL, S_FREE_OLDEST
from dreamalloc.alloc.workloads.lim import (
    BfGoodStream,
    MixedStream,
    RandomStream,
    WfGoodStream,
    bf_good_script,
    wf_good_script,
)
from dreamalloc.core.rng import CounterRNG, numpy_generator, splitmix64, splitmix64_int

pytestmark = pytest.mark.usefixtures("single_thread")

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


# --------------------------------------------------------------------------------------------------
# splitmix64 and CounterRNG
# --------------------------------------------------------------------------------------------------
def test_splitmix64_known_answers():
    # the first outputs of the standard splitmix64 generator seeded with 0 (state advances by the golden
    # gamma, the output is the finaliser of the state): splitmix64_int(k * gamma) is output k + 1
    assert splitmix64_int(0) == 0xE220A8397B1DCDAF
    assert splitmix64_int(GOLDEN) == 0x6E789E6AA1B965F4
    assert splitmix64_int(2 * GOLDEN & MASK) == 0x06C45D188009454F


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(INT64, min_size=1, max_size=64))
def test_splitmix64_tensor_matches_python(xs):
    got = splitmix64(torch.tensor(xs, dtype=torch.long)).tolist()
    assert [g & MASK for g in got] == [splitmix64_int(x & MASK) for x in xs]


def test_splitmix64_extremes():
    xs = [0, 1, -1, (1 << 63) - 1, -(1 << 63), -GOLDEN & MASK, 0x123456789ABCDEF]
    xs = [x - (1 << 64) if x >= 1 << 63 else x for x in xs]
    got = splitmix64(torch.tensor(xs, dtype=torch.long)).tolist()
    assert [g & MASK for g in got] == [splitmix64_int(x & MASK) for x in xs]


def ref_uniform(seed: int, episode: int, salt: int, j: int) -> float:
    """Draw j of the (seed, episode, salt) stream, in plain Python integers."""
    key = splitmix64_int(splitmix64_int((seed ^ (salt * 0x632BE59BD9B4E019)) & MASK) + episode & MASK)
    z = splitmix64_int((key + j * GOLDEN) & MASK)
    return (z >> 11) * (1.0 / (1 << 53))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, (1 << 62)), episode=st.integers(0, 10**6), salt=st.integers(0, 9))
def test_counter_rng_matches_python_reference(seed, episode, salt):
    rng = CounterRNG(2)
    rows = torch.tensor([1])
    rng.reseed(rows, torch.tensor([seed]), torch.tensor([episode]), salt)
    got = [float(rng.uniform(rows)[0]) for _ in range(4)]
    assert got == [ref_uniform(seed, episode, salt, j) for j in range(4)]
    assert all(0.0 <= u < 1.0 for u in got)
    assert rng.counter.tolist() == [0, 4]


def test_counter_rng_independent_of_batch_composition():
    seeds, episodes = [11, 22, 33, 44, 55], [0, 3, 0, 7, 1]
    batch = CounterRNG(5)
    all_rows = torch.arange(5)
    batch.reseed(all_rows, torch.tensor(seeds), torch.tensor(episodes), salt=1)
    draws = [[] for _ in range(5)]
    # draw for changing subsets of rows: each heap's j-th draw must not depend on who else drew
    subsets = [[0, 1, 2, 3, 4], [2], [4, 0], [1, 3, 2], [0, 1, 2, 3, 4], [3]]
    for sub in subsets * 3:
        u = batch.uniform(torch.tensor(sub))
        for b, v in zip(sub, u.tolist(), strict=True):
            draws[b].append(v)
    for b in range(5):
        alone = CounterRNG(1)
        alone.reseed(torch.tensor([0]), torch.tensor([seeds[b]]), torch.tensor([episodes[b]]), salt=1)
        mine = [float(alone.uniform(torch.tensor([0]))[0]) for _ in draws[b]]
        assert mine == draws[b], f"heap {b}"
    # reseeding one row restarts its stream and leaves the others where they were
    before = batch.counter.clone()
    batch.reseed(torch.tensor([2]), torch.tensor([seeds[2]]), torch.tensor([episodes[2]]), salt=1)
    assert batch.counter.tolist() == [int(c) if b != 2 else 0 for b, c in enumerate(before)]
    assert float(batch.uniform(torch.tensor([2]))[0]) == draws[2][0]


def test_counter_rng_streams_differ_and_are_uniform():
    rng = CounterRNG(4)
    rows = torch.arange(4)
    # same seed, different episode / salt, or different seed: different streams
    rng.reseed(rows[:3], torch.tensor([5, 5, 6]), torch.tensor([0, 1, 0]), salt=0)
    rng.reseed(rows[3:], torch.tensor([5]), torch.tensor([0]), salt=1)
    u = torch.stack([rng.uniform(rows) for _ in range(2000)])  # [2000, 4]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(u[:, a], u[:, b])
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    # 2000 draws per stream: mean 0.5 +- 0.0065 (1 sd), deciles 0.1 +- 0.0067
    assert torch.allclose(u.mean(0), torch.full((4,), 0.5, dtype=torch.float64), atol=0.03)
    hist = torch.stack([torch.histc(u[:, b], bins=10, min=0, max=1) for b in range(4)]) / 2000
    assert float((hist - 0.1).abs().max()) < 0.035
    ints = torch.stack([rng.integers(rows, 2, 4) for _ in range(300)])
    assert set(ints.unique().tolist()) == {2, 3, 4}


def test_counter_rng_state_dict_round_trip():
    rng = CounterRNG(3)
    rows = torch.arange(3)
    rng.reseed(rows, torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0]))
    rng.uniform(rows)
    sd = rng.state_dict()
    a = rng.uniform(rows)
    rng.load_state_dict(sd)
    assert torch.equal(rng.uniform(rows), a)


def test_numpy_generator_determinism():
    a = numpy_generator(3, 4, 7).integers(0, 1 << 30, size=8)
    b = numpy_generator(3, 4, 7).integers(0, 1 << 30, size=8)
    c = numpy_generator(3, 5, 7).integers(0, 1 << 30, size=8)
    d = numpy_generator(3, 4, 8).integers(0, 1 << 30, size=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)
    # negative seeds are taken as their 64-bit pattern rather than failing
    assert np.array_equal(numpy_generator(-1, 0).integers(0, 100, 4), numpy_generator(MASK, 0).integers(0, 100, 4))


# --------------------------------------------------------------------------------------------------
# driving streams with a simple policy (first fit; a request that fits nowhere is skipped)
# --------------------------------------------------------------------------------------------------
def drive(name: str, seeds: list[int], episodes: list[int], steps: int, cells: int, **params):
    """Run a stream against first fit; returns op, size, block and n_live-before as [steps, B] tensors."""
    B = len(seeds)
    heaps = HeapBatch(B, cells)
    stream = make_stream(name, B, cells, **params)
    rows = torch.arange(B)
    stream.reset(heaps, rows, torch.tensor(seeds), torch.tensor(episodes))
    ops, sizes, blocks, n_live, rank = [], [], [], [], []
    for _ in range(steps):
        n_live.append(heaps.n_live.clone())
        req = stream.next(heaps, rows)
        # where the freed block sits among the live slots perm[b, :n_live] (-1 for no free)
        rank.append(torch.where(req.block >= 0, heaps.pos[rows, req.block.clamp(min=0)], -1))
        ops.append(req.op.clone())
        sizes.append(req.size.clone())
        blocks.append(req.block.clone())
        alloc = req.op == ALLOC
        assert (req.size[alloc] >= 1).all() and (req.size[alloc] <= cells).all()
        addr = place_address(FreeRuns.of(heaps.occ), req.size.clamp(min=1), "first")
        go = alloc & (addr >= 0)
        assert heaps.allocate(addr[go], req.size[go], heaps=rows[go]).all()
        fr = (req.op == FREE) & (req.block >= 0)
        assert heaps.live[rows[fr], req.block[fr]].all(), "a FREE request names a live block"
        heaps.free(req.block[fr], heaps=rows[fr])
        heaps.free_all(rows[req.op == FREE_ALL])
    drive.rank = torch.stack(rank)
    return torch.stack(ops), torch.stack(sizes), torch.stack(blocks), torch.stack(n_live)


STREAM_NAMES = ["random", "bf-good", "wf-good", "mixed"]


def test_stream_registry():
    assert set(stream_names()) >= {*STREAM_NAMES, "tasks", "pattern"}
    assert isinstance(make_stream("random", 2, 64), RandomStream)
    assert isinstance(make_stream("dist", 2, 64), RandomStream)
    assert isinstance(make_stream("bf-good", 2, 64), BfGoodStream)
    assert isinstance(make_stream("ff-bad", 2, 64), BfGoodStream)
    assert isinstance(make_stream("wf-good", 2, 64), WfGoodStream)
    assert isinstance(make_stream("mixed", 2, 64), MixedStream)


@pytest.mark.parametrize("name", STREAM_NAMES)
def test_streams_deterministic_and_batch_independent(name):
    seeds, episodes = [3, 3, 8, 21, 5], [0, 1, 0, 2, 0]
    first = drive(name, seeds, episodes, 120, 64)
    again = drive(name, seeds, episodes, 120, 64)
    for x, y in zip(first, again, strict=True):
        assert torch.equal(x, y)
    # a different episode of the same seed gives a different sequence
    assert not torch.equal(first[0][:, 0], first[0][:, 1]) or not torch.equal(first[1][:, 0], first[1][:, 1])
    # heap b alone sees what it sees in the batch of 5
    for b in (0, 3):
        alone = drive(name, [seeds[b]], [episodes[b]], 120, 64)
        for x, y in zip(first, alone, strict=True):
            assert torch.equal(x[:, b], y[:, 0]), (name, b)


def test_random_stream_statistics():
    # 40 heaps x 150 steps; first fit on 256 cells does not fill up in that time (about +0.6 cell a step)
    ops, sizes, blocks, n_live = drive("random", list(range(40)), [0] * 40, 150, 256)
    assert set(ops.unique().tolist()) <= {ALLOC, FREE}
    # nothing live: always an allocation
    assert (ops[n_live == 0] == ALLOC).all()
    could_free = n_live > 0
    frac = float((ops[could_free] == FREE).double().mean())
    n = int(could_free.sum())
    assert n > 5000
    assert abs(frac - 0.4) < 0.025  # sd sqrt(.24 / n) < 0.007
    alloc_sizes = sizes[ops == ALLOC]
    assert int(alloc_sizes.min()) == 1 and int(alloc_sizes.max()) == 5
    counts = torch.bincount(alloc_sizes, minlength=6)[1:].double() / alloc_sizes.numel()
    assert alloc_sizes.numel() > 3000
    assert float((counts - 0.2).abs().max()) < 0.025  # sd sqrt(.16 / 3000) < 0.0075
    assert (sizes[ops == FREE] == 0).all() and (blocks[ops == ALLOC] == -1).all()
    assert (blocks[ops == FREE] >= 0).all()
    # the freed block is uniform among the live ones: its position in perm[b, :n_live], scaled to [0, 1)
    is_free = ops == FREE
    rel = (drive.rank[is_free].double() + 0.5) / n_live[is_free].double()
    assert (drive.rank[is_free] < n_live[is_free]).all()
    assert abs(float(rel.mean()) - 0.5) < 0.02  # sd about 0.29 / sqrt(2000) = 0.0065
    quart = torch.histc(rel, bins=4, min=0, max=1) / rel.numel()
    assert float((quart - 0.25).abs().max()) < 0.04


def test_random_stream_parameters():
    ops, sizes, _, n_live = drive("random", list(range(10)), [0] * 10, 100, 128, free_prob=0.0, size_min=3,
                                  size_max=4)
    assert (ops == ALLOC).all()
    assert set(sizes.unique().tolist()) == {3, 4}


# --------------------------------------------------------------------------------------------------
# adversarial scripts
# --------------------------------------------------------------------------------------------------
CELLS = 256
SMALLS_256 = {25, 12, 8, 5, 2, 1}  # 256 // {10, 20, 30, 50, 100, 200}


def check_bf_good(script, cells=CELLS):
    """[A big, A small..., A pad, FREE_OLDEST, A 1, A big], the pad leaving exactly big - 1 free."""
    ops = [op for op, _ in script]
    assert ops[-3:] == [S_FREE_OLDEST, S_ALLOC, S_ALLOC]
    assert all(op == S_ALLOC for op in ops[:-3])
    sizes = [s for _, s in script]
    big = sizes[0]
    assert big in {cells // k for k in (2, 3, 4, 5)}
    allocs = sizes[:-3]
    smalls, pad = allocs[1:-1], allocs[-1]
    if cells == CELLS:
        assert set(smalls) <= SMALLS_256
    assert pad >= 1
    assert cells - sum(allocs) == big - 1
    # the small blocks stop only when the next would leave less than big free
    assert cells - big - sum(smalls) >= big
    assert sizes[-2:] == [1, big]
    return big


def check_wf_good(script, cells=CELLS):
    """[A big x n, A pad, (FREE_OLDEST, [A small])..., A sum(bigs)], pad leaving cells // 2.5 free."""
    section = int(cells // 2.5)
    n_big = [op for op, _ in script].index(S_FREE_OLDEST) - 1  # the allocation before the first free is the pad
    assert n_big >= 1
    bigs = [s for _, s in script[:n_big]]
    pad = script[n_big][1]
    assert all(op == S_ALLOC for op, _ in script[: n_big + 1])
    assert set(bigs) <= {cells // r for r in (8, 9, 10)}
    assert cells - sum(bigs) - pad == section
    # the loop stopped because a drawn big (at most cells // 8) would have left section or less free
    assert cells - sum(bigs) - cells // 8 <= section < cells - sum(bigs)
    assert pad >= 1
    rest = script[n_big + 1:]
    assert rest[-1] == (S_ALLOC, sum(bigs))
    middle = rest[:-1]
    assert sum(op == S_FREE_OLDEST for op, _ in middle) == n_big
    smalls = [s for op, s in middle if op == S_ALLOC]
    assert 1 <= len(smalls) <= 3 and all(1 <= s <= 3 for s in smalls)
    # a small allocation follows each of the first len(smalls) frees, none after
    expect = []
    for i in range(n_big):
        expect.append(S_FREE_OLDEST)
        if i < len(smalls):
            expect.append(S_ALLOC)
    assert [op for op, _ in middle] == expect
    return bigs, smalls


def test_bf_good_script_structure():
    bigs = Counter()
    for seed in range(300):
        bigs[check_bf_good(bf_good_script(numpy_generator(seed, 0, 7), CELLS))] += 1
    assert set(bigs) == {128, 85, 64, 51}  # every k in 2..5 occurs


def test_wf_good_script_structure():
    n_smalls, big_sizes = Counter(), Counter()
    assert int(CELLS // 2.5) == 102
    for seed in range(300):
        bigs, smalls = check_wf_good(wf_good_script(numpy_generator(seed, 0, 7), CELLS))
        n_smalls[len(smalls)] += 1
        big_sizes.update(bigs)
    assert set(n_smalls) == {1, 2, 3}
    assert set(big_sizes) == {32, 28, 25}


def test_bf_good_hand_example_k2():
    # big = 128: no small block fits before less than 128 would stay free, so the pad is 1 cell
    class Fixed:
        def choice(self, xs):
            return 2 if 2 in xs else xs[0]

    assert bf_good_script(Fixed(), 256) == [(S_ALLOC, 128), (S_ALLOC, 1), (S_FREE_OLDEST, 0), (S_ALLOC, 1),
                                            (S_ALLOC, 128)]


def test_scripts_on_small_heaps():
    for cells in (20, 21, 37, 64, 100):
        for seed in range(40):
            check_bf_good(bf_good_script(numpy_generator(seed, 1, 7), cells), cells)
            check_wf_good(wf_good_script(numpy_generator(seed, 1, 7), cells), cells)


def test_mixed_script_has_one_free_all_between_two_scripts():
    stream = MixedStream(1, CELLS)
    kinds = Counter()
    for seed in range(200):
        sc = stream.script(numpy_generator(seed, 0, MixedStream.SALT))
        assert sum(op == S_FREE_ALL for op, _ in sc) == 1
        cut = [op for op, _ in sc].index(S_FREE_ALL)
        parts = []
        for part in (sc[:cut], sc[cut + 1:]):
            if sum(op == S_FREE_OLDEST for op, _ in part) == 1:  # wf-good frees at least 4 bigs at 256
                check_bf_good(part)
                parts.append("bf")
            else:
                check_wf_good(part)
                parts.append("wf")
        kinds[tuple(parts)] += 1
    assert set(kinds) == {("bf", "bf"), ("bf", "wf"), ("wf", "bf"), ("wf", "wf")}


def simulate(script, rule, cells=CELLS):
    """Run a script on one heap with a placement rule; the indices of allocations that fit nowhere."""
    h = HeapBatch(1, cells)
    fails = []
    for i, (op, size) in enumerate(script):
        if op == S_ALLOC:
            a = int(place_address(FreeRuns.of(h.occ), torch.tensor([size]), rule, rover=h.rover)[0])
            if a < 0:
                fails.append(i)
            else:
                assert h.allocate(a, size).all()
        elif op == S_FREE_OLDEST:
            h.free(h._oldest(torch.tensor([0])))
        else:
            h.free_all()
    return fails


def test_bf_good_only_best_fit_survives():
    for seed in range(60):
        sc = bf_good_script(numpy_generator(seed, 0, 7), CELLS)
        assert simulate(sc, "best") == []
        assert simulate(sc, "first") == [len(sc) - 1]  # the final big allocation
        assert simulate(sc, "worst") == [len(sc) - 1]


def test_wf_good_only_worst_fit_survives():
    ties = []
    for seed in list(range(100)) + [220]:
        sc = wf_good_script(numpy_generator(seed, 0, 7), CELLS)
        bigs, smalls = check_wf_good(sc)
        assert simulate(sc, "first") == [len(sc) - 1]
        assert simulate(sc, "best") == [len(sc) - 1]
        # worst fit puts the j-th small block in the region after the pad (102 - earlier smalls free) unless
        # the freed front region (the first j + 1 bigs) has exactly that size: the tie goes to the lower
        # address, the small block lands in front and the final allocation fails (seed 220, cells 256:
        # bigs 32, 32, 32 and smalls 3, 3 give 96 == 96).
        tie = any(sum(bigs[: j + 1]) == 102 - sum(smalls[:j]) for j in range(len(smalls)))
        assert simulate(sc, "worst") == ([len(sc) - 1] if tie else [])
        ties += [seed] * tie
    assert ties == [220]


def test_scripted_stream_emits_its_script():
    seed, episode = 17, 2
    for name, fn in (("bf-good", bf_good_script), ("wf-good", wf_good_script)):
        script = fn(numpy_generator(seed, episode, 7), 128)
        ops, sizes, blocks, n_live = drive(name, [seed], [episode], len(script) + 30, 128)
        kind = {S_ALLOC: ALLOC, S_FREE_OLDEST: FREE, S_FREE_ALL: FREE_ALL}
        assert ops[: len(script), 0].tolist() == [kind[op] for op, _ in script]
        assert sizes[: len(script), 0].tolist() == [s if op == S_ALLOC else 0 for op, s in script]
        assert (blocks[: len(script), 0][ops[: len(script), 0] == FREE] >= 0).all()
        # then the random stream: sizes 1..5
        tail = ops[len(script):, 0]
        assert set(tail.tolist()) <= {ALLOC, FREE}
        assert set(sizes[len(script):, 0][tail == ALLOC].tolist()) <= {1, 2, 3, 4, 5}


@pytest.mark.parametrize("name", ["bf-good", "wf-good", "mixed"])
def test_scripted_stream_restarts_on_reset(name):
    """Resetting some rows mid-episode restarts their script from its first request; other rows go on."""
    cells = 64
    stream, heaps, rows = make_stream(name, 3, cells), HeapBatch(3, cells), torch.arange(3)
    stream.reset(heaps, rows, torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0]))
    script = [stream.script(numpy_generator(s, e, stream.SALT)) for s, e in ((1, 0), (2, 0), (3, 0), (2, 5))]
    got = [[] for _ in range(3)]

    def step(n):
        for _ in range(n):
            req = stream.next(heaps, rows)
            for b in range(3):
                got[b].append((int(req.op[b]), int(req.size[b])))
            addr = place_address(FreeRuns.of(heaps.occ), req.size.clamp(min=1), "first")
            go = (req.op == ALLOC) & (addr >= 0)
            heaps.allocate(addr[go], req.size[go], heaps=rows[go])
            fr = (req.op == FREE) & (req.block >= 0)
            heaps.free(req.block[fr], heaps=rows[fr])
            heaps.free_all(rows[req.op == FREE_ALL])

    kind = {S_ALLOC: ALLOC, S_FREE_OLDEST: FREE, S_FREE_ALL: FREE_ALL}

    def expect(sc, n):
        return [(kind[op], s if op == S_ALLOC else 0) for op, s in sc[:n]]

    step(3)
    heaps.reset([1])
    stream.reset(heaps, torch.tensor([1]), torch.tensor([2]), torch.tensor([5]))  # row 1: seed 2, episode 5
    step(4)
    # (a script may be shorter than 7 requests at 64 cells; the random stream follows it)
    assert all(len(sc) >= 5 for sc in script)
    for b in (0, 2):
        n = min(7, len(script[b]))
        assert got[b][:n] == expect(script[b], n)
    n = min(4, len(script[3]))
    assert got[1][: 3 + n] == expect(script[1], 3) + expect(script[3], n)


def test_scripted_free_oldest_frees_the_oldest_block():
    stream = make_stream("bf-good", 1, 64)
    heaps = HeapBatch(1, 64)
    rows = torch.tensor([0])
    stream.reset(heaps, rows, torch.tensor([4]), torch.tensor([0]))
    first_slot = None
    while True:
        req = stream.next(heaps, rows)
        if int(req.op[0]) == FREE:
            assert int(req.block[0]) == first_slot  # the big block, allocated first
            break
        addr = place_address(FreeRuns.of(heaps.occ), req.size, "first")
        assert heaps.allocate(addr, req.size).all()
        if first_slot is None:
            first_slot = heaps.blocks(0)[0][0]


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def test_bad_stream_names_and_parameters():
    with pytest.raises(ValueError, match=r"unknown request stream 'nope'.*bf-good"):
        make_stream("nope", 2, 64)
    with pytest.raises(ValueError, match=r"free_prob must lie in \[0, 1\), got 1.5"):
        make_stream("random", 2, 64, free_prob=1.5)
    with pytest.raises(ValueError, match="free_prob"):
        make_stream("random", 2, 64, free_prob=1.0)
    with pytest.raises(ValueError, match="free_prob"):
        make_stream("dist", 2, 64, free_prob=-0.1)
    with pytest.raises(ValueError, match="size_max=17"):
        make_stream("random", 2, 16, size_max=17)
    with pytest.raises(ValueError, match="size_min=0"):
        make_stream("random", 2, 16, size_min=0)
    with pytest.raises(ValueError, match="size_min=4, size_max=3"):
        make_stream("random", 2, 16, size_min=4, size_max=3)
    with pytest.raises(ValueError, match="at least 20 cells, got 19"):
        make_stream("bf-good", 2, 19)
    with pytest.raises(ValueError, match="at least 20 cells"):
        make_stream("wf-good", 2, 10)
    with pytest.raises(ValueError, match="at least 20 cells"):
        make_stream("mixed", 2, 10)
    with pytest.raises(ValueError, match="free_prob"):
        make_stream("wf-good", 2, 64, free_prob=1.5)  # the continuation's parameters are checked too
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['free_probability'\]; valid: free_prob"):
        make_stream("random", 2, 64, free_probability=0.3)
    with pytest.raises(ValueError, match=r"stream 'bf-good' has no parameter\(s\) \['bogus'\]"):
        make_stream("bf-good", 2, 64, bogus=1)
