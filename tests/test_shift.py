"""In-episode shifts and task distributions over parameter ranges."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from invariants import check_heaps

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.workloads import make_stream
from dreamalloc.core.tasks import expand_tasks

SMALL = {"name": "small", "stream": "pattern", "params": {"size_min": 1, "size_max": 2, "free_prob": 0.5}}
BIG = {"name": "big", "stream": "pattern", "params": {"size_min": 6, "size_max": 8, "free_prob": 0.5}}


def drive(B, seed, steps, cells=128, **params):
    """First-fit run of a shift stream; per step: (allocation count, task id, pending request size)."""
    core = AllocCore(B, cells=cells, stream="shift", stream_params={"tasks": [SMALL, BIG], **params},
                     heuristics=("first",), max_allocs=10_000)
    _, info = core.reset(seed=seed)
    log = []
    for _ in range(steps):
        log.append((core.heaps.n_allocs.clone(), info["task_id"].clone(), core.request.clone(),
                    core.episode.clone()))
        _, _, _, _, info = core.step(torch.zeros(B, dtype=torch.long))
    return core, log


def test_abrupt_switches_at_the_configured_allocation_count():
    _, log = drive(8, 0, 150, at=20)
    checked = 0
    for t, tid, size, ep in log:
        first = ep == 0
        # the pending request follows an allocation, so its allocation count says which segment it is in
        want = (t // 20) % 2
        assert torch.equal(tid[first], want[first])
        assert bool((size[first & (tid == 0)] <= 2).all()) and bool((size[first & (tid == 1)] >= 6).all())
        checked += int(first.sum())
    assert checked > 300


def test_random_switch_points_lie_in_the_range_and_differ_between_heaps():
    _, log = drive(64, 3, 60, at=[10, 30])
    first_switch = torch.full((64,), -1)
    for t, tid, _, ep in log:
        hit = (tid == 1) & (first_switch < 0) & (ep == 0)
        first_switch[hit] = t[hit]
    seen = first_switch[first_switch >= 0]
    assert seen.numel() > 40
    assert int(seen.min()) >= 10 and int(seen.max()) <= 30
    assert seen.unique().numel() > 5


def test_gradual_blend_rises_linearly():
    B, at, span = 256, 30, 40
    _, log = drive(B, 1, 160, cells=512, at=at, span=span, schedule="gradual")
    # fraction of requests from the next task by position in the blend: 0 before, ~linear inside
    buckets = {k: [] for k in range(4)}
    before = []
    for t, tid, _, ep in log:
        m = (ep == 0) & (t < at + span)
        pos = (t - at)
        before += tid[m & (pos < 0)].tolist()
        for k in range(4):
            sel = m & (pos >= k * span // 4) & (pos < (k + 1) * span // 4)
            buckets[k] += tid[sel].tolist()
    assert before and sum(before) == 0
    frac = [sum(v) / len(v) for v in buckets.values()]
    expected = [(k + 0.5) / 4 for k in range(4)]
    for f, e in zip(frac, expected, strict=True):
        assert abs(f - e) < 0.08, (frac, expected)


def test_deterministic_and_batch_independent():
    a = drive(6, 11, 120, at=[5, 25], schedule="gradual", span=10)[1]
    b = drive(6, 11, 120, at=[5, 25], schedule="gradual", span=10)[1]
    assert all(all(torch.equal(x, y) for x, y in zip(p, q, strict=True)) for p, q in zip(a, b, strict=True))
    single = drive(1, 11 + 4, 120, at=[5, 25], schedule="gradual", span=10)[1]
    assert all(int(p[2][4]) == int(q[2][0]) and int(p[1][4]) == int(q[1][0]) for p, q in zip(a, single, strict=True))


def test_tasks_of_one_family_draw_differently():
    twin = [SMALL, {**SMALL, "name": "small2", "params": {"size_min": 1, "size_max": 8, "free_prob": 0.5}}]
    core = AllocCore(1, cells=128, stream="shift", stream_params={"tasks": twin, "at": 1000})
    s = core.stream
    rows = torch.zeros(1, dtype=torch.long)
    s.reset(core.heaps, rows, torch.tensor([5]), torch.tensor([0]))
    u0, u1 = s.streams[0].rng.uniforms(rows, 8), s.streams[1].rng.uniforms(rows, 8)
    assert not torch.equal(u0, u1)


@settings(max_examples=12, deadline=None)
@given(at=st.integers(1, 40), width=st.integers(0, 30), span=st.integers(1, 30),
       schedule=st.sampled_from(["abrupt", "gradual"]), seed=st.integers(0, 10_000),
       third=st.sampled_from(["random", "bf-good", "wf-good"]))
def test_heap_invariants(at, width, span, schedule, seed, third):
    tasks = [SMALL, BIG, {"name": "lim", "stream": third}]
    core = AllocCore(3, cells=96, stream="shift", stream_params={"tasks": tasks, "at": [at, at + width],
                                                                 "span": span, "schedule": schedule})
    core.reset(seed=seed)
    for _ in range(60):
        _, _, _, _, info = core.step(torch.zeros(3, dtype=torch.long))
        assert bool(((info["task_id"] >= 0) & (info["task_id"] < 3)).all())
        assert bool(((core.request >= 1) & (core.request <= 96)).all())
    check_heaps(core.heaps)


def test_state_dict_resumes_exactly():
    core, _ = drive(4, 2, 50, at=[5, 15], schedule="gradual", span=8)
    state = core.state_dict()
    twin = AllocCore(4, cells=128, stream="shift", stream_params={"tasks": [SMALL, BIG], "at": [5, 15],
                                                                  "schedule": "gradual", "span": 8},
                     heuristics=("first",), max_allocs=10_000)
    twin.load_state_dict(state)
    a = torch.zeros(4, dtype=torch.long)
    for _ in range(40):
        o1, r1, *_ , i1 = core.step(a)
        o2, r2, *_ , i2 = twin.step(a)
        assert torch.equal(o1, o2) and torch.equal(i1["task_id"], i2["task_id"])


@pytest.mark.parametrize("params, needle", [
    ({"tasks": [SMALL]}, "at least two tasks"),
    ({"tasks": [SMALL, BIG], "schedule": "sudden"}, "schedule must be one of"),
    ({"tasks": [SMALL, BIG], "at": 0}, "1 <= lo <= hi"),
    ({"tasks": [SMALL, BIG], "at": [30, 10]}, "1 <= lo <= hi"),
    ({"tasks": [SMALL, BIG], "at": "soon"}, "at must be an integer"),
    ({"tasks": [SMALL, BIG], "span": 0}, "span must be an integer >= 1"),
    ({"tasks": [SMALL, {"stream": "nope"}]}, "unknown request stream"),
])
def test_bad_parameters(params, needle):
    with pytest.raises(ValueError, match=needle):
        make_stream("shift", 2, 64, **params)


# --------------------------------------------------------------------------------------------------
# task distributions over parameter ranges
# --------------------------------------------------------------------------------------------------
DIST = {"name": "sizes", "stream": "pattern", "params": {"size_min": 1}, "ranges": {"size_max": [3, 9],
        "free_prob": [0.2, 0.6]}, "choices": {"order": ["fifo", "lifo"]}, "samples": 6, "seed": 4}


def test_ranges_expand_into_reproducible_tasks():
    tasks = expand_tasks([DIST, {"name": "fixed", "stream": "random"}])
    assert [t["name"] for t in tasks] == [f"sizes/{i}" for i in range(6)] + ["fixed"]
    for t in tasks[:6]:
        p = t["params"]
        assert p["size_min"] == 1 and isinstance(p["size_max"], int) and 3 <= p["size_max"] <= 9
        assert isinstance(p["free_prob"], float) and 0.2 <= p["free_prob"] <= 0.6
        assert p["order"] in ("fifo", "lifo")
        assert t["weight"] == pytest.approx(1 / 6)
    assert len({(t["params"]["size_max"], t["params"]["free_prob"]) for t in tasks[:6]}) == 6
    assert expand_tasks([DIST]) == expand_tasks([DIST])
    other = expand_tasks([{**DIST, "seed": 5}])
    assert [t["params"] for t in other] != [t["params"] for t in tasks[:6]]


def test_a_task_distribution_runs_in_the_env():
    core = AllocCore(16, cells=64, stream="tasks", stream_params={"tasks": [DIST]})
    _, info = core.reset(seed=0)
    assert core.cfg.n_tasks == 6 and int(info["task_id"].max()) < 6
    for _ in range(30):
        core.step(torch.zeros(16, dtype=torch.long))
    check_heaps(core.heaps)


@pytest.mark.parametrize("task, needle", [
    ({**DIST, "samples": 0}, "samples >= 1"),
    ({**DIST, "ranges": {"size_max": [9, 3]}}, "lo <= hi"),
    ({**DIST, "ranges": {"size_max": "big"}}, r"\[lo, hi\]"),
    ({**DIST, "choices": {"order": []}}, "non-empty list"),
    ({**DIST, "color": 1}, "unknown key"),
])
def test_bad_task_distributions(task, needle):
    with pytest.raises(ValueError, match=needle):
        expand_tasks([task])
