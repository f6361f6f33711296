"""Adversarial families (only the target placement rule survives the script) and Mandal & Rohil's pre-holed
heap: survival on the batched core, the drawn layouts, determinism, heap invariants, the FREE_SEQ script op,
parameter errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from invariants import check_heaps
from test_heuristics import MANDAL_EXPECTED, MANDAL_OCCUPIED, MANDAL_REQUESTS

from dreamalloc.alloc.env import AllocCore
from dreamalloc.alloc.heap import RULES, FreeRuns, HeapBatch, place_address
from dreamalloc.alloc.workloads import ALLOC, FREE, FREE_ALL, make_stream, stream_names
from dreamalloc.alloc.workloads.adversarial import (
    MIN_CELLS,
    AdversarialStream,
    FfGoodStream,
    NfGoodStream,
    PreholedStream,
    SfGoodStream,
    adversarial_plan,
    mandal_layout,
    next_fit_pick,
)
from dreamalloc.alloc.workloads.base import S_ALLOC, S_FREE_SEQ, ScriptedStream
from dreamalloc.core.rng import numpy_generator
from dreamalloc.core.rollout import run_episodes

pytestmark = pytest.mark.usefixtures("single_thread")


def plan_of(target, cells, seed, episode=0, holes=None, blind=None):
    return adversarial_plan(numpy_generator(seed, episode, AdversarialStream.SALT), cells, target, holes, blind)


def n_script_allocs(plan) -> int:
    return sum(op == S_ALLOC for op, _ in plan.script)


# --------------------------------------------------------------------------------------------------
# the guarantee: on the batched core, only the target survives the script
# --------------------------------------------------------------------------------------------------
def survival(target: str, cells: int, seeds: list[int], holes=None, blind=None):
    """Allocations each rule made in episode 0 of each seed: [len(RULES), n], and the script's allocations."""
    plans = [plan_of(target, cells, s, 0, holes, blind) for s in seeds]
    A = np.array([n_script_allocs(p) for p in plans])
    k = np.array([len(p.hole_size) for p in plans])
    # truncate just past the longest script: survival is decided there, the random tail is not needed
    params = {"target": target, "holes": holes} | ({"blind": list(blind)} if blind else {})
    core = AllocCore(len(RULES) * len(seeds), cells=cells, stream="adversarial",
                     stream_params=params, heuristics=RULES, max_allocs=int(A.max()) + 1)
    act = torch.arange(len(RULES)).repeat_interleave(len(seeds))  # heap r * n + i: rule r on seed i
    res = run_episodes(core, lambda obs, info: act, seed=seeds * len(RULES))
    return res["allocations"][:, 0].reshape(len(RULES), len(seeds)), A, k


@pytest.mark.parametrize("cells", [64, 256, 1024])
@pytest.mark.parametrize("target", RULES)
def test_only_the_target_survives(target, cells):
    allocs, A, k = survival(target, cells, list(range(50)))
    for r, rule in enumerate(RULES):
        if rule == target:
            assert (allocs[r] >= A).all(), f"{target} failed inside its own script (cells {cells})"
        else:
            # the rule got through the tiling and the probe, and failed on one of the k - 1 test requests
            assert (allocs[r] < A).all(), f"{rule} survived the {target} script (cells {cells})"
            assert (allocs[r] >= A - (k - 1)).all()


def test_every_hole_count_and_large_heaps():
    for holes, cells in ((3, 4096), (4, 333), (5, 64), (5, 4096)):
        for target in RULES:
            allocs, A, k = survival(target, cells, list(range(100, 106)), holes)
            assert (k == holes).all()
            for r, rule in enumerate(RULES):
                assert ((allocs[r] >= A) == (rule == target)).all(), (holes, cells, target, rule)


BLIND_SETS = [("best", "worst", "first"), RULES, ("next", "second"), ("worst", "next", "best")]


@pytest.mark.parametrize("blind", BLIND_SETS, ids="-".join)
@pytest.mark.parametrize("cells", [64, 256])
def test_blind_only_the_target_survives(blind, cells):
    """Blind layouts: among the blind rules only the target survives; each of them dies on a test request."""
    for target in blind:
        allocs, A, k = survival(target, cells, list(range(30)), blind=blind)
        assert (k == max(3, len(blind))).all()
        for r, rule in enumerate(RULES):
            if rule == target:
                assert (allocs[r] >= A).all(), f"{target} failed inside its own blind script (cells {cells})"
            elif rule in blind:
                assert (allocs[r] < A).all() and (allocs[r] >= A - (k - 1)).all(), (target, rule)


@pytest.mark.parametrize("blind", BLIND_SETS, ids="-".join)
def test_blind_layout_tells_nothing_about_the_target(blind):
    """Same (seed, episode), different targets: the same requests up to and including the probe, and every
    blind rule takes a candidate of its own, so nothing before the probe's outcome names the target."""
    for cells in (64, 100, 1024):
        for seed in range(40):
            plans = {t: plan_of(t, cells, seed, blind=blind) for t in blind}
            ref = plans[blind[0]]
            upto = [i for i, (op, s) in enumerate(ref.script) if op == S_ALLOC][-len(ref.tests) - 1]  # the probe
            assert ref.script[upto] == (S_ALLOC, ref.probe)
            picks = probe_picks(ref)
            assert len({picks[r] for r in blind}) == len(blind)
            for t, p in plans.items():
                assert p.script[: upto + 1] == ref.script[: upto + 1]
                assert (p.hole_start, p.hole_size, p.probe, p.rover) == (ref.hole_start, ref.hole_size, ref.probe,
                                                                          ref.rover)
                assert p.target_hole == picks[t]
                assert min(p.tests) > max(p.hole_size) and len(p.tests) == len(p.hole_size) - 1
    # and the target's candidate is not a fixed index: every blind rule's hole moves between layouts
    where = {(plan_of(blind[0], 256, s, blind=blind).target_hole) for s in range(100)}
    assert blind[0] in ("first", "second") or len(where) > 1


@pytest.mark.parametrize("params, match", [
    ({"target": "best", "blind": ["worst", "first"]}, "target 'best' must be one of the blind rules"),
    ({"target": "best", "blind": ["best", "quick"]}, "blind must be true, false or a list"),
    ({"target": "best", "blind": "best"}, "blind must be true, false or a list"),
    ({"target": "best", "blind": True, "holes": 4}, "holes=4 is too few for 5 blind rules"),
])
def test_blind_errors(params, match):
    with pytest.raises(ValueError, match=match):
        make_stream("adversarial", 2, 64, **params)


# --------------------------------------------------------------------------------------------------
# the drawn layouts
# --------------------------------------------------------------------------------------------------
def probe_picks(plan) -> dict[str, int]:
    """The candidate each rule takes for the probe (all candidates fit it), from the rules' definitions."""
    h = list(plan.hole_size)
    ends = [a + s for a, s in zip(plan.hole_start, h, strict=True)]
    return {"first": 0, "second": 1, "best": h.index(min(h)), "worst": h.index(max(h)),
            "next": next_fit_pick(ends, plan.rover)}


def test_plans_single_out_the_target():
    for cells in (64, 100, 257, 1024, 4096):
        for target in RULES:
            for seed in range(40):
                p = plan_of(target, cells, seed)
                k = len(p.hole_size)
                assert k in (3, 4, 5) and len(set(p.hole_size)) == k
                assert 1 <= p.probe <= min(p.hole_size)
                picks = probe_picks(p)
                assert [r for r in RULES if picks[r] == p.target_hole] == [target]
                assert list(p.tests) == sorted(set(p.tests), reverse=True) and len(p.tests) == k - 1
                assert min(p.tests) > max(p.hole_size)
                assert all(1 <= s <= cells for op, s in p.script if op == S_ALLOC)
                assert max(p.hole_size) <= max(cells // 10, 6)  # holes scale with the heap


def test_hole_ranks_and_positions_vary():
    seen = {t: set() for t in RULES}
    for target in RULES:
        for seed in range(200):
            p = plan_of(target, 256, seed)
            seen[target].add((len(p.hole_size), p.target_hole))
    assert {t for _, t in seen["first"]} == {0} and {t for _, t in seen["second"]} == {1}
    for target in ("next", "best", "worst"):
        assert {t for _, t in seen[target]} == {2, 3, 4}
    assert all({k for k, _ in s} == {3, 4, 5} for s in seen.values())


def play(stream, heaps, rows, rule, n):
    """n requests of a stream on HeapBatch rows, placed by one rule (a request that fits nowhere is dropped)."""
    out = []
    for _ in range(n):
        req = stream.next(heaps, rows)
        out.append((req.op.clone(), req.size.clone()))
        alloc = req.op == ALLOC
        addr = place_address(FreeRuns.of(heaps.occ[rows]), req.size.clamp(min=1), rule, rover=heaps.rover[rows])
        go = alloc & (addr >= 0)
        assert heaps.allocate(addr[go], req.size[go], heaps=rows[go]).all()
        fr = (req.op == FREE) & (req.block >= 0)
        heaps.free(req.block[fr], heaps=rows[fr])
        heaps.free_all(rows[req.op == FREE_ALL])
    return out


@pytest.mark.parametrize("target", RULES)
def test_layout_at_the_probe(target):
    """Just before the probe the free runs that fit it are the plan's candidates, the others (decoys) are
    smaller than it, and next fit's rover is where the plan put it; after the script the tail is free."""
    cells, seeds = 128, list(range(12))
    plans = [plan_of(target, cells, s) for s in seeds]
    probe_at = [max(i for i, (op, s) in enumerate(p.script) if op == S_ALLOC and s == p.probe
                    and i < len(p.script) - len(p.tests)) for p in plans]
    for b, (p, at) in enumerate(zip(plans, probe_at, strict=True)):
        h = HeapBatch(1, cells)
        one = make_stream("adversarial", 1, cells, target=target)
        one.reset(h, torch.tensor([0]), torch.tensor([seeds[b]]), torch.tensor([0]))
        play(one, h, torch.tensor([0]), target, at)
        runs = FreeRuns.of(h.occ)
        fitting = [(a, n) for a, n in zip(runs.start.tolist(), runs.length.tolist(), strict=True) if n >= p.probe]
        assert fitting == list(zip(p.hole_start, p.hole_size, strict=True))
        assert int(runs.largest()) == max(p.hole_size)
        assert int(h.rover[0]) == p.rover
        play(one, h, torch.tensor([0]), target, len(p.script) - at)
        assert int(FreeRuns.of(h.occ).largest()) >= cells // 10  # room for the random continuation
        check_heaps(h)


# --------------------------------------------------------------------------------------------------
# determinism, batch independence, the continuation
# --------------------------------------------------------------------------------------------------
def requests(name, seeds, episodes, steps, cells, rule="first", **params):
    stream, heaps = make_stream(name, len(seeds), cells, **params), HeapBatch(len(seeds), cells)
    rows = torch.arange(len(seeds))
    stream.reset(heaps, rows, torch.tensor(seeds), torch.tensor(episodes))
    out = play(stream, heaps, rows, rule, steps)
    return torch.stack([o for o, _ in out]), torch.stack([s for _, s in out])


@pytest.mark.parametrize("target", RULES)
def test_deterministic_and_batch_independent(target):
    seeds, episodes = [5, 5, 9, 40], [0, 1, 0, 3]
    ops, sizes = requests("adversarial", seeds, episodes, 90, 96, rule=target, target=target)
    ops2, sizes2 = requests("adversarial", seeds, episodes, 90, 96, rule=target, target=target)
    assert torch.equal(ops, ops2) and torch.equal(sizes, sizes2)
    assert not torch.equal(sizes[:, 0], sizes[:, 1])  # another episode, another draw
    for b in (1, 3):
        o, s = requests("adversarial", [seeds[b]], [episodes[b]], 90, 96, rule=target, target=target)
        assert torch.equal(o[:, 0], ops[:, b]) and torch.equal(s[:, 0], sizes[:, b])
    # the stream emits its plan's script, then the random stream (sizes 1..5, some frees)
    p = plan_of(target, 96, seeds[0])
    n = len(p.script)
    kind = {S_ALLOC: ALLOC, S_FREE_SEQ: FREE}
    assert ops[:n, 0].tolist() == [kind[op] for op, _ in p.script]
    assert sizes[:n, 0].tolist() == [s if op == S_ALLOC else 0 for op, s in p.script]
    tail_ops, tail_sizes = ops[n:, 0], sizes[n:, 0]
    assert set(tail_sizes[tail_ops == ALLOC].tolist()) <= {1, 2, 3, 4, 5} and FREE in tail_ops.tolist()


def test_convenience_names_and_registry():
    assert {"adversarial", "ff-good", "nf-good", "sf-good", "preholed", "bf-good", "wf-good"} <= set(stream_names())
    for name, cls, target in (("ff-good", FfGoodStream, "first"), ("nf_good", NfGoodStream, "next"),
                              ("sf-good", SfGoodStream, "second")):
        s = make_stream(name, 2, 64)
        assert isinstance(s, cls) and s.target == target
        a = make_stream("adversarial", 2, 64, target=target)
        rng = [numpy_generator(3, 1, cls.SALT) for _ in range(2)]
        assert s.script(rng[0]) == a.script(rng[1])
    assert isinstance(make_stream("preholed", 1, 100), PreholedStream)


def test_state_dict_round_trip_mid_script():
    kw = dict(cells=80, stream="adversarial", stream_params={"target": "next"}, heuristics=RULES)
    a = AllocCore(6, **kw)
    act = torch.tensor([0, 1, 2, 3, 4, 1])
    a.reset(seed=3)
    for _ in range(20):
        a.step(act)
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()}
    b = AllocCore(6, **kw)
    b.reset(seed=99)
    b.load_state_dict(state)
    for _ in range(40):
        ra, rb = a.step(act), b.step(act)
        assert torch.equal(ra[0], rb[0]) and torch.equal(ra[1], rb[1]) and torch.equal(ra[2], rb[2])


@settings(max_examples=8, deadline=None)
@given(target=st.sampled_from(RULES), cells=st.integers(64, 160), holes=st.sampled_from([None, 3, 4, 5]),
       seed=st.integers(0, 2**31), free_prob=st.floats(0.0, 0.9))
def test_heap_invariants_adversarial(target, cells, holes, seed, free_prob):
    core = AllocCore(4, cells=cells, stream="adversarial", heuristics=RULES,
                     stream_params={"target": target, "holes": holes, "free_prob": free_prob})
    rng = np.random.default_rng(seed)
    core.reset(seed=seed)
    for i in range(60):
        core.step(torch.as_tensor(rng.integers(0, len(RULES), 4)))
        if i % 10 == 0:
            check_heaps(core.heaps)
    check_heaps(core.heaps)


# --------------------------------------------------------------------------------------------------
# the FREE_SEQ script op
# --------------------------------------------------------------------------------------------------
class Fixed(ScriptedStream):
    def __init__(self, batch, cells, script):
        super().__init__(batch, cells, then=make_stream("random", batch, cells))
        self._script = script

    def script(self, rng):
        return list(self._script)


def test_free_seq_counts_from_the_script_start():
    heaps = HeapBatch(2, 32)
    rows = torch.arange(2)
    heaps.allocate([0, 0], [2, 2])  # allocations before the script: they do not shift j
    heaps.allocate([2, 2], [1, 1])
    stream = Fixed(2, 32, [(S_ALLOC, 3), (S_ALLOC, 4), (S_FREE_SEQ, 1), (S_FREE_SEQ, 1), (S_FREE_SEQ, 7),
                           (S_FREE_SEQ, 0)])
    stream.reset(heaps, rows, torch.tensor([0, 1]), torch.tensor([0, 0]))
    got = []
    for _ in range(6):
        req = stream.next(heaps, rows)
        got.append((req.op.tolist(), req.size.tolist(), req.block.tolist()))
        if int(req.op[0]) == ALLOC:
            start = int(heaps.used[0])
            slots = [heaps.allocate(start, req.size[0], heaps=[b]) for b in (0, 1)]
            assert all(bool(s.all()) for s in slots)
        else:
            ok = req.block >= 0
            heaps.free(req.block[ok], heaps=rows[ok])
    slot_of = {int(heaps.block_size[0, s]): s for s in range(32) if heaps.block_size[0, s] > 0}
    assert got[2][0] == [FREE, FREE] and got[2][2] == [slot_of[4]] * 2  # the script's second allocation
    assert got[3][2] == [-1, -1]  # no longer live: nothing to free
    assert got[4][2] == [-1, -1]  # never allocated
    assert got[5][2] == [slot_of[3]] * 2
    assert [b[2] for b in heaps.blocks(0)] == [2, 1]  # the blocks from before the script are untouched


# --------------------------------------------------------------------------------------------------
# preholed
# --------------------------------------------------------------------------------------------------
MANDAL_RUNS = [(0, 5), (15, 10), (30, 10), (55, 10), (70, 10), (95, 5)]


def runs_of(heaps, b=0):
    r = FreeRuns.of(heaps.occ[b: b + 1])
    return list(zip(r.start.tolist(), r.length.tolist(), strict=True))


def test_preholed_initial_layout():
    core = AllocCore(3, cells=100, stream="preholed")
    core.reset(seed=0)
    for b in range(3):
        assert [(a, n) for _, a, n in core.heaps.blocks(b)] == MANDAL_OCCUPIED
        assert runs_of(core.heaps, b) == MANDAL_RUNS
    assert core.heaps.rover.tolist() == [0, 0, 0] and core.heaps.n_live.tolist() == [5] * 3
    assert core.request.tolist() == [8, 8, 8]
    # each new episode starts from the same layout
    for _ in range(30):
        core.step(torch.zeros(3, dtype=torch.long))
    core.reset()
    assert runs_of(core.heaps, 1) == MANDAL_RUNS


def test_preholed_scaled_layouts():
    assert mandal_layout(100) == [(a, a + n - 1) for a, n in MANDAL_OCCUPIED]
    assert mandal_layout(200) == [(10, 29), (50, 59), (80, 109), (130, 139), (160, 189)]
    for cells in list(range(20, 260)) + [1000, 4096]:
        blocks = mandal_layout(cells)
        h = HeapBatch(1, cells)
        for a, b in blocks:
            assert h.allocate(a, b - a + 1).all()
        runs = runs_of(h)
        assert len(runs) == 6 and all(n >= 1 for _, n in runs), cells
        assert abs(int(h.used[0]) - cells / 2) <= 3  # half the heap occupied, as at N = 100


def test_preholed_user_layout_and_request_order():
    kw = dict(occupied=[[10, 19], [0, 3], [40, 40]], sizes=[3, 30, 2, 7], skip_unfit=False)
    ops, sizes = requests("preholed", [0], [0], 4, 64, **kw)
    assert ops[:, 0].tolist() == [ALLOC] * 4 and sizes[:, 0].tolist() == [3, 30, 2, 7]
    core = AllocCore(1, cells=64, stream="preholed", stream_params=kw)
    core.reset(seed=0)
    assert runs_of(core.heaps) == [(4, 6), (20, 20), (41, 23)]


@pytest.mark.parametrize("rule", RULES)
def test_preholed_agrees_with_the_hand_worked_mandal_placements(rule):
    """On the env, each rule places the requests where the hand-worked test does (rover 0); the 12 and the 11
    fit nowhere and are skipped, as in Mandal & Rohil's app."""
    core = AllocCore(2, cells=100, stream="preholed", heuristics=(rule,))
    core.reset(seed=[4, 7])
    seen, placed = [], []
    for _ in range(5):
        seen.append(int(core.request[0]))
        core.step(torch.zeros(2, dtype=torch.long))
        assert int(core.heaps.rover[0]) == int(core.heaps.rover[1])
        placed.append(int(core.heaps.rover[0]) - seen[-1])  # the rover sits just past the block placed
    assert seen == [s for s in MANDAL_REQUESTS if s not in (12, 11)]
    assert placed == [a for a in MANDAL_EXPECTED[rule] if a >= 0]
    # without skipping, the 12 ends the episode right after the first placement
    core = AllocCore(1, cells=100, stream="preholed", heuristics=(rule,), stream_params={"skip_unfit": False},
                     autoreset=False)
    core.reset(seed=0)
    _, _, term, _, _ = core.step(torch.zeros(1, dtype=torch.long))
    assert bool(term[0]) and int(core.request[0]) == 12
    assert [a for _, a, _ in core.heaps.blocks(0)].count(MANDAL_EXPECTED[rule][0]) == 1


def test_preholed_then_repeat_and_random():
    kw = dict(occupied=[[0, 9]], sizes=[3, 4])
    ops, sizes = requests("preholed", [0], [0], 12, 64, then="repeat", **kw)
    assert ops[:, 0].tolist() == [ALLOC] * 12 and sizes[:, 0].tolist() == [3, 4] * 6
    # 54 free cells take 7 pairs (49 cells) and one more 3; the next 4 ends the episode
    core = AllocCore(1, cells=64, stream="preholed", stream_params={**kw, "then": "repeat"}, heuristics=("first",),
                     terminal_reward="alloc")
    res = run_episodes(core, lambda o, i: torch.zeros(1, dtype=torch.long))
    assert res["length"][0, 0] == 15 and abs(res["return"][0, 0] - 1.5) < 1e-9
    ops, sizes = requests("preholed", list(range(8)), [0] * 8, 60, 64, then="random", free_prob=0.5, **kw)
    assert (sizes[:2] == torch.tensor([[3], [4]])).all()
    tail_ops, tail_sizes = ops[2:], sizes[2:]
    assert set(tail_sizes[tail_ops == ALLOC].tolist()) <= {1, 2, 3, 4, 5}
    assert (tail_ops == FREE).any()


@settings(max_examples=10, deadline=None)
@given(data=st.data(), cells=st.integers(24, 96), seed=st.integers(0, 2**31))
def test_heap_invariants_preholed(data, cells, seed):
    cuts = sorted(data.draw(st.sets(st.integers(0, cells - 1), min_size=2, max_size=10)))
    occupied = [[cuts[i], cuts[i + 1]] for i in range(0, len(cuts) - 1, 2) if cuts[i + 1] < cells]
    sizes = data.draw(st.lists(st.integers(1, cells), min_size=1, max_size=6))
    then = data.draw(st.sampled_from(["random", "repeat"]))
    params = {"occupied": occupied, "sizes": sizes, "then": then}
    heaps = HeapBatch(2, cells)
    make_stream("preholed", 2, cells, **params).reset(heaps, torch.arange(2), torch.tensor([seed, 1]),
                                                      torch.tensor([0, 0]))
    assert [[a, a + n - 1] for _, a, n in heaps.blocks(1)] == occupied
    core = AllocCore(3, cells=cells, stream="preholed", heuristics=RULES, stream_params=params)
    core.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        core.step(torch.as_tensor(rng.integers(0, len(RULES), 3)))
    check_heaps(core.heaps)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, match", [
    ("adversarial", {}, "target must name the rule"),
    ("adversarial", {"target": "random"}, "target must name the rule.*first, next, best, worst, second"),
    ("adversarial", {"target": "best", "holes": 6}, "holes"),
    ("adversarial", {"target": "best", "holes": True}, "holes"),
    ("adversarial", {"target": "best", "free_prob": 1.5}, "free_prob"),
    ("ff-good", {"target": "best"}, r"stream 'ff-good' has no parameter\(s\) \['target'\]; valid: blind"),
    ("sf-good", {"bogus": 1}, r"stream 'sf-good' has no parameter\(s\) \['bogus'\]"),
    ("preholed", {"occupied": [[0, 5], [5, 9]]}, r"\[0, 5\] and \[5, 9\] overlap"),
    ("preholed", {"occupied": [[90, 100]]}, r"occupied range \[90, 100\]"),
    ("preholed", {"occupied": [[7, 3]]}, r"occupied range \[7, 3\]"),
    ("preholed", {"occupied": [[1]]}, "occupied must be a list"),
    ("preholed", {"occupied": "0-5"}, "occupied must be a list"),
    ("preholed", {"sizes": [0, 3]}, r"sizes must lie in \[1, cells = 100\]"),
    ("preholed", {"sizes": [101]}, "sizes must lie in"),
    ("preholed", {"sizes": []}, "non-empty"),
    ("preholed", {"sizes": [2.5]}, "integer"),
    ("preholed", {"then": "loop"}, "then must be one of random, repeat"),
    ("preholed", {"then": "repeat", "free_prob": 0.2}, "only apply with then='random'"),
    ("preholed", {"skip_unfit": "perhaps"}, "skip_unfit"),  # "yes" is true (workloads/params.py)
])
def test_bad_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_stream(name, 2, 100, **params)


def test_heap_too_small():
    with pytest.raises(ValueError, match=f"cells .* must be >= {MIN_CELLS}, got 63"):
        make_stream("adversarial", 2, 63, target="first")
    with pytest.raises(ValueError, match="cells .* must be >= 64"):
        make_stream("nf-good", 2, 20)
    with pytest.raises(ValueError, match="cells .* must be >= 20 .*occupied"):
        make_stream("preholed", 2, 19)
    assert isinstance(make_stream("preholed", 2, 12, occupied=[[2, 3]], sizes=[1]), PreholedStream)
