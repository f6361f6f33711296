"""The parameterised pattern stream: determinism, batch independence, heap invariants, the statistics of
each size law, the lifetime models and free orders, the program phases, and parameter validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.heap import HeapBatch
from dreamalloc.alloc.workloads import ALLOC, FREE, make_stream
from dreamalloc.alloc.workloads.families import PatternStream

pytestmark = pytest.mark.usefixtures("single_thread")

CELLS = 128


def drive(params: dict, B: int = 4, steps: int = 200, seed: int = 0, cells: int = CELLS):
    """Run AllocCore on the pattern stream with first-fit actions; log every request the stream issues
    (per row: op, size, sequence number of the freed block, allocation count, live cells, the oldest and
    newest live sequence numbers, episode)."""
    core = AllocCore(B, cells=cells, stream="pattern", stream_params=params, heuristics=("first",))
    log: list[dict] = []
    orig = core.stream.next

    def nxt(heaps, rows):
        req = orig(heaps, rows)
        live = heaps.live[rows]
        seq = heaps.block_seq[rows]
        log.append({
            "rows": rows.clone(), "op": req.op.clone(), "size": req.size.clone(),
            "seq": torch.where(req.block >= 0, seq.gather(1, req.block.clamp(min=0)[:, None]).squeeze(1), -1),
            "t": heaps.n_allocs[rows].clone(), "used": heaps.used[rows].clone(),
            "oldest": torch.where(live, seq, 1 << 62).min(1).values,
            "newest": torch.where(live, seq, -1).max(1).values,
            "episode": core.episode[rows].clone(),
        })
        return req

    core.stream.next = nxt
    core.reset(seed=seed)
    zeros = torch.zeros(B, dtype=torch.long)
    for _ in range(steps):
        core.step(zeros)
        h = core.heaps
        sums = torch.where(h.live, h.block_size, 0).sum(1)
        assert torch.equal(h.used, sums)
        assert torch.equal(h.used, h.occ.sum(1))
        assert int(core.request.min()) >= 1 and int(core.request.max()) <= cells
    return core, log


def per_row(log: list[dict], B: int) -> list[list[tuple]]:
    """The request log split by heap row: (op, size, freed seq, t, used, oldest, newest, episode) tuples."""
    out: list[list[tuple]] = [[] for _ in range(B)]
    keys = ("op", "size", "seq", "t", "used", "oldest", "newest", "episode")
    for e in log:
        cols = [e[k].tolist() for k in keys]
        for i, r in enumerate(e["rows"].tolist()):
            out[r].append(tuple(c[i] for c in cols))
    return out


MIXED = {"size_dist": "powerlaw", "size_max": 8, "alpha": 1.2, "lifetime": "exponential", "life": 15,
         "phase": "peak", "phase_len": 30, "order": "fifo"}


def test_registered_and_defaults():
    s = make_stream("pattern", 2, 64)
    assert isinstance(s, PatternStream)
    assert (s.size_min, s.size_max, s.lifetime, s.free_prob, s.phase) == (1, 5, "prob", 0.4, "none")
    f = PatternStream(2, 200, size_units="fraction")
    assert (f.size_min, f.size_max) == (2, 10)


@pytest.mark.parametrize("params", [{}, MIXED, {"size_dist": "classes", "classes": [2, 7], "lifetime": "fixed",
                                                "life": 9, "phase": "plateau", "phase_len": 20}])
def test_deterministic(params):
    _, a = drive(params, seed=5, steps=100)
    _, b = drive(params, seed=5, steps=100)
    assert per_row(a, 4) == per_row(b, 4)
    _, c = drive(params, seed=6, steps=100)
    assert per_row(a, 4) != per_row(c, 4)


@pytest.mark.parametrize("params", [{"order": "lifo", "free_prob": 0.3}, MIXED])
def test_batch_independence(params):
    B, seed = 3, 11
    _, log = drive(params, B=B, seed=seed, steps=150)
    batch = per_row(log, B)
    for b in range(B):
        _, one = drive(params, B=1, seed=seed + b, steps=150)
        assert batch[b] == per_row(one, 1)[0]


@settings(max_examples=20, deadline=None)
@given(
    size_dist=st.sampled_from(["uniform", "classes", "geometric", "powerlaw"]),
    fraction=st.booleans(),
    lo=st.floats(0.005, 0.05), width=st.floats(0.0, 0.1),
    lifetime=st.sampled_from(["prob", "fixed", "exponential"]),
    order=st.sampled_from(["random", "fifo", "lifo"]),
    phase=st.sampled_from(["none", "ramp", "peak", "plateau"]),
    free_prob=st.floats(0.0, 1.0), life=st.integers(1, 40), phase_len=st.integers(1, 40),
    level=st.floats(0.0, 1.0), seed=st.integers(0, 1000),
)
def test_heap_invariants(size_dist, fraction, lo, width, lifetime, order, phase, free_prob, life, phase_len,
                         level, seed):
    hi = min(lo + width, 1.0)
    if fraction:
        sizes = {"size_units": "fraction", "size_min": lo, "size_max": hi}
        classes = [lo, hi]
    else:
        sizes = {"size_min": max(1, round(lo * CELLS)), "size_max": max(1, round(hi * CELLS))}
        classes = [sizes["size_min"], sizes["size_max"]]
    params = {"size_dist": size_dist, **sizes, "lifetime": lifetime, "order": order, "phase": phase,
              "free_prob": free_prob, "life": life, "phase_len": phase_len, "peak_keep": level,
              "plateau_level": level}
    if size_dist == "classes":
        params["classes"] = classes
    _, log = drive(params, B=3, steps=40, seed=seed)  # drive() checks used == live sizes and request range
    for e in log:
        alloc = e["op"] == ALLOC
        assert bool(((e["size"][alloc] >= 1) & (e["size"][alloc] <= CELLS)).all())


# --------------------------------------------------------------------------------------------------
# size laws: i.i.d. draws on empty heaps (nothing live, so every request allocates)
# --------------------------------------------------------------------------------------------------
def draw_sizes(cells: int = 256, n: int = 4000, reps: int = 5, **params) -> np.ndarray:
    s = PatternStream(n, cells, **params)
    heaps = HeapBatch(n, cells)
    rows = torch.arange(n)
    s.reset(heaps, rows, torch.arange(n), torch.zeros(n, dtype=torch.long))
    out = []
    for _ in range(reps):
        r = s.next(heaps, rows)
        assert bool((r.op == ALLOC).all())
        out.append(r.size.numpy())
    return np.concatenate(out)


def test_uniform_sizes():
    x = draw_sizes(size_min=3, size_max=12)
    assert set(np.unique(x)) == set(range(3, 13))
    assert abs(x.mean() - 7.5) < 0.1  # sd 2.9 / sqrt(20000) = 0.02
    f = draw_sizes(cells=200, size_units="fraction", size_min=0.1, size_max=0.2)
    assert f.min() == 20 and f.max() == 40


def test_class_frequencies():
    x = draw_sizes(size_dist="classes", classes=[4, 16, 64], class_probs=[0.5, 0.3, 0.2])
    assert set(np.unique(x)) == {4, 16, 64}
    for c, p in ((4, 0.5), (16, 0.3), (64, 0.2)):
        assert abs((x == c).mean() - p) < 0.02  # sd <= 0.0036
    b = draw_sizes(size_units="fraction", size_dist="classes", classes=[0.25, 1.0])
    assert set(np.unique(b)) == {64, 256} and abs((b == 64).mean() - 0.5) < 0.02


def test_geometric_mean():
    lo, hi, p = 2, 40, 0.2
    x = draw_sizes(size_dist="geometric", size_min=lo, size_max=hi, tail_p=p)
    s = np.arange(lo, hi + 1)
    w = (1 - p) ** (s - lo)
    mean = (s * w).sum() / w.sum()
    assert x.min() >= lo and x.max() <= hi
    assert abs(x.mean() - mean) < 0.15  # sd about 4.5 / sqrt(20000) = 0.03
    assert abs(PatternStream(1, 256, size_dist="geometric", size_min=lo, size_max=hi, tail_p=p).mean_size
               - mean) < 1e-9
    assert set(np.unique(draw_sizes(size_dist="geometric", size_min=5, size_max=9, tail_p=1.0))) == {5}


def test_powerlaw_mean():
    lo, hi, a = 1, 100, 1.5
    x = draw_sizes(size_dist="powerlaw", size_min=lo, size_max=hi, alpha=a)
    s = np.arange(lo, hi + 1, dtype=float)
    w = s ** -a
    mean = (s * w).sum() / w.sum()
    assert x.min() >= lo and x.max() <= hi
    assert abs(x.mean() - mean) / mean < 0.05  # sd about 14 / sqrt(20000) = 0.1 on a mean of about 5.6
    assert abs((x == 1).mean() - w[0] / w.sum()) < 0.02


# --------------------------------------------------------------------------------------------------
# lifetimes and free orders
# --------------------------------------------------------------------------------------------------
def test_fixed_lifetimes():
    life = 12
    _, log = drive({"lifetime": "fixed", "life": life, "size_max": 3}, B=4, steps=200)
    n_free = 0
    for row in per_row(log, 4):
        for op, _size, seq, t, _used, oldest, _newest, _ep in row:
            if op == FREE:
                n_free += 1
                assert t == seq + 1 + life  # freed right after the life-th allocation after its own
            else:  # an allocation: nothing overdue is still live
                assert oldest == 1 << 62 or t - (oldest + 1) < life
    assert n_free > 4 * 100


def test_exponential_lifetimes():
    life = 10.0
    _, log = drive({"lifetime": "exponential", "life": life, "size_max": 2}, B=8, steps=250)
    ages = [t - seq - 1 for row in per_row(log, 8) for op, _s, seq, t, *_ in row if op == FREE]
    assert len(ages) > 1000
    # integer ages are ceil(Exp(life)) minus at most the queueing of simultaneous deaths: mean ~ life + 0.5
    assert 0.8 * life < np.mean(ages) < 1.3 * life


@pytest.mark.parametrize("order", ["fifo", "lifo", "random"])
def test_free_order(order):
    _, log = drive({"order": order, "free_prob": 0.45, "size_max": 4}, B=4, steps=200)
    frees = [(seq, oldest, newest) for row in per_row(log, 4) for op, _s, seq, _t, _u, oldest, newest, _e in row
             if op == FREE]
    assert len(frees) > 200
    if order == "fifo":
        assert all(seq == oldest for seq, oldest, _ in frees)
    elif order == "lifo":
        assert all(seq == newest for seq, _, newest in frees)
    else:
        assert any(seq not in (oldest, newest) for seq, oldest, newest in frees)


# --------------------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------------------
def test_ramp_grows_then_frees():
    L = 40
    _, log = drive({"phase": "ramp", "phase_len": L, "free_prob": 0.5, "size_max": 2}, B=4, steps=150)
    for row in per_row(log, 4):
        assert all(t >= L for op, _s, _q, t, *_ in row if op == FREE)
        assert any(op == FREE for op, *_ in row)


def test_peak_drains():
    L, keep = 40, 0.1
    _, log = drive({"phase": "peak", "phase_len": L, "peak_keep": keep, "free_prob": 0.2, "size_min": 1,
                    "size_max": 2}, B=4, steps=150)
    for row in per_row(log, 4):
        ep0 = [r for r in row if r[7] == row[0][7]]
        assert all(t >= L for op, _s, _q, t, *_ in ep0 if op == FREE)
        before = max(used for op, _s, _q, t, used, *_ in ep0 if t == L)
        assert before > keep * CELLS
        # the first allocation request at t == L comes after the drain
        first = next(r for r in ep0 if r[3] == L and r[0] == ALLOC)
        assert first[4] <= keep * CELLS
        assert min(used for _op, _s, _q, t, used, *_ in ep0 if t > L) <= keep * CELLS + 2


def test_plateau_holds_level():
    L, level = 20, 0.4
    _, log = drive({"phase": "plateau", "phase_len": L, "plateau_level": level, "size_max": 2}, B=4,
                   steps=200)
    for row in per_row(log, 4):
        ep0 = [r for r in row if r[7] == row[0][7]]
        for op, _s, _q, t, used, *_ in ep0:
            if (t % (2 * L)) < L:
                assert op == ALLOC  # growing
            elif op == ALLOC:
                assert used <= level * CELLS  # holding: allocates only at or below the level
        assert any(op == FREE for op, *_ in ep0)


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,name", [
    ({"size_dist": "zipf"}, "size_dist"),
    ({"size_units": "bytes"}, "size_units"),
    ({"lifetime": "forever"}, "lifetime"),
    ({"order": "oldest"}, "order"),
    ({"phase": "burst"}, "phase"),
    ({"free_prob": 1.5}, "free_prob"),
    ({"free_prob": -0.1}, "free_prob"),
    ({"size_min": 6, "size_max": 3}, "size_min"),
    ({"size_min": 0}, "size_min"),
    ({"size_max": 65}, "size_max"),
    ({"size_max": 2.5}, "size_max"),
    ({"size_units": "fraction", "size_max": 1.5}, "size_max"),
    ({"size_units": "fraction", "size_min": 0.0}, "size_min"),
    ({"size_dist": "classes"}, "classes"),
    ({"size_dist": "classes", "classes": []}, "classes"),
    ({"size_dist": "classes", "classes": [1, 2], "class_probs": [0.5, 0.6]}, "class_probs"),
    ({"size_dist": "classes", "classes": [1, 2], "class_probs": [1.0]}, "class_probs"),
    ({"size_dist": "classes", "classes": [1, 2], "class_probs": [1.5, -0.5]}, "class_probs"),
    ({"size_dist": "classes", "classes": [1, 100]}, "classes[1]"),
    ({"classes": [1, 2]}, "classes"),
    ({"size_dist": "powerlaw", "alpha": 0}, "alpha"),
    ({"size_dist": "powerlaw", "alpha": -1}, "alpha"),
    ({"tail_p": 0.0}, "tail_p"),
    ({"tail_p": 1.1}, "tail_p"),
    ({"lifetime": "fixed", "life": 0}, "life"),
    ({"lifetime": "fixed", "life": 2.5}, "life"),
    ({"lifetime": "exponential", "life": -3}, "life"),
    ({"phase_len": 0}, "phase_len"),
    ({"peak_keep": 2}, "peak_keep"),
    ({"plateau_level": -0.5}, "plateau_level"),
])
def test_bad_parameters(params, name):
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        PatternStream(2, 64, **params)


def test_bad_parameters_through_registry():
    with pytest.raises(ValueError, match="free_prob"):
        make_stream("pattern", 2, 64, free_prob=2)
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['nonsense'\]; valid: alpha, class_probs"):
        make_stream("pattern", 2, 64, nonsense=1)
    assert math.isclose(make_stream("pattern", 2, 64, life=3.5, lifetime="exponential").life, 3.5)


def test_checkpoint_resume_and_tasks():
    core, _ = drive(MIXED, B=3, steps=20)
    state = core.state_dict()
    zeros = torch.zeros(3, dtype=torch.long)
    first = [core.step(zeros)[0] for _ in range(60)]
    core.load_state_dict(state)
    again = [core.step(zeros)[0] for _ in range(60)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    tasks = [{"stream": "pattern", "params": {"lifetime": "fixed", "life": 5}},
             {"stream": "pattern", "params": {"size_dist": "classes", "classes": [3, 9]}}]
    c = AllocCore(4, cells=64, stream="tasks", stream_params={"tasks": tasks}, heuristics=("first",))
    c.reset(seed=1)
    for _ in range(50):
        c.step(torch.zeros(4, dtype=torch.long))
        assert torch.equal(c.heaps.used, torch.where(c.heaps.live, c.heaps.block_size, 0).sum(1))
