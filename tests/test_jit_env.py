"""The compiled batched step (``alloc.jit.JitAllocDomain``) against the torch core: same seeds, same actions, every
observation, reward, flag, info value and the final state equal, bit for bit; and the rules for when it runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dreamalloc.alloc import AllocCore, AllocVectorEnv
from dreamalloc.alloc.env import AllocDomain
from dreamalloc.alloc.heap import FreeRuns
from dreamalloc.alloc.jit import AVAILABLE, JitAllocDomain
from dreamalloc.alloc.workloads.base import S_ALLOC
from dreamalloc.alloc.workloads.lim import MixedStream

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")

CONFIGS = [
    dict(cells=64),
    dict(cells=48, stream="mixed"),
    dict(cells=40, stream="bf-good", action="hole", holes=4, summary=True),
    dict(cells=32, stream="wf-good", action="address", history=3, hole_features=2),
    dict(cells=64, heuristics=("first", "next", "best", "worst", "second"), align="end", summary=True),
    dict(cells=64, stream="mixed", meta_obs=True, trial_episodes=3, size_scale="fraction", history=2),
    dict(cells=32, stream="random", stream_params={"free_prob": 0.6, "size_min": 2, "size_max": 9},
         terminal_reward="zero", max_allocs=40),
    dict(cells=48, stream="mixed", action="hole", holes=3, terminal_reward="alloc", max_invalid=5, align="end",
         bitmap=False, summary=True, hole_features=3),
    dict(cells=24, stream="bf-good", action="address", max_invalid=3, meta_obs=True),
    dict(cells=64, stream="wf-good", heuristics=("next", "second"), max_allocs=30, history=1),
    dict(cells=48, stream="mixed", trial_episodes=3, summary=True, hole_features=2, size_scale="fraction"),
    # the pattern stream: every lifetime law, order, phase and size law
    dict(cells=64, stream="pattern"),
    dict(cells=64, stream="pattern", stream_params=dict(lifetime="exponential", life=15, phase="peak", phase_len=40,
                                                        peak_keep=0.3), action="hole", holes=4, summary=True),
    dict(cells=64, stream="pattern", stream_params=dict(lifetime="fixed", life=12, order="fifo", phase="plateau",
                                                        phase_len=20, size_dist="geometric", size_max=9)),
    dict(cells=64, stream="pattern", stream_params=dict(order="lifo", phase="ramp", phase_len=30,
                                                        size_dist="powerlaw", size_max=20), action="address"),
    dict(cells=96, stream="pattern", stream_params=dict(lifetime="exponential", life=30, order="fifo", phase="plateau",
                                                        plateau_level=0.3, size_dist="classes", classes=[2, 7, 19],
                                                        class_probs=[0.5, 0.3, 0.2]), meta_obs=True, trial_episodes=2),
    # a task stream of pattern streams (the traces suite's training profiles), and a recorded trace
    dict(cells=128, stream="tasks", stream_params=dict(tasks=[
        {"name": "p", "stream": "pattern", "params": {"size_units": "fraction", "size_min": 0.004,
                                                      "lifetime": "exponential"},
         "ranges": {"size_max": [0.02, 0.08], "life": [10, 60], "phase_len": [20, 80]},
         "choices": {"phase": ["ramp", "peak", "plateau"]}, "samples": 5, "seed": 21}]), trial_episodes=2),
    dict(cells=64, stream="trace", stream_params=dict(path="sed_swap", granularity=16, random_start=True)),
    dict(cells=64, stream="trace", stream_params=dict(path="bc_pi", granularity="auto", window=300),
         action="hole", holes=3),
    # holes listed shortest first (hole 0 is best fit's run), in the action space and the hole features
    dict(cells=64, stream="random", stream_params={"size_min": 1, "size_max": 7}, action="hole", holes=5,
         hole_order="size", hole_features=4, bitmap=False, summary=True),
    dict(cells=96, stream="pattern", stream_params=dict(lifetime="exponential", life=12), action="hole", holes=3,
         hole_order="size", align="end", hole_features=2),
    # the ideal (compacting) heap of the capacity bound
    dict(cells=48, stream="mixed", ideal=True, heuristics=("first", "next", "best", "worst", "second")),
    dict(cells=64, stream="pattern", stream_params=dict(lifetime="exponential", life=25, size_max=9), ideal=True,
         action="hole", holes=4, summary=True),
    dict(cells=64, stream="trace", stream_params=dict(path="sed_swap", granularity=16, random_start=True), ideal=True,
         action="address", history=2),
]


def _same(x, y, where):
    if isinstance(x, dict):
        assert list(x) == list(y), (where, list(x), list(y))
        for k in x:
            _same(x[k], y[k], f"{where}/{k}")
    elif isinstance(x, list):  # a task stream's sub-streams
        assert isinstance(y, list) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _same(u, v, f"{where}[{i}]")
    else:  # tensors, or numpy arrays (the gymnasium face's): the same kind, dtype, shape and values
        assert type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape, (where, x.dtype, y.dtype, x.shape,
                                                                                  y.shape)
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else np.array_equal(x, y), where


def _actions(info, n, B, rng):
    """70 % valid actions where there is a mask, the rest uniform (invalid ones included)."""
    act = torch.from_numpy(rng.integers(0, n, B))
    m = info.get("action_mask")
    if m is not None:
        good = torch.multinomial(m.float() + 1e-9, 1).squeeze(1)
        act = torch.where(torch.from_numpy(rng.random(B) < 0.7), good, act)
    return act


def _lockstep(a, b, steps, seed, rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    oa, ia = a.reset(seed=seed)
    ob, ib = b.reset(seed=seed)
    _same(oa, ob, "reset obs")
    _same(ia, ib, "reset info")
    for t in range(steps):
        act = _actions(ia, a.spec.n_actions, a.B, rng)
        ra, rb = a.step(act), b.step(act)
        for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
            _same(x, y, f"step {t} item {i}")
        ia = ra[4]
    _same(a.state_dict(), b.state_dict(), "state")


@pytest.mark.parametrize("cfg", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_compiled_step_equals_the_torch_core(cfg):
    torch_core, jit_core = AllocCore(16, jit=False, **cfg), AllocCore(16, jit=True, **cfg)
    assert type(torch_core.domain) is AllocDomain and isinstance(jit_core.domain, JitAllocDomain)
    _lockstep(torch_core, jit_core, steps=300, seed=3)


def test_the_fused_trials_step_runs_where_it_applies():
    """Heuristic space, autoreset, no RL^2 or task inputs: ``Trials.step`` runs fused with the compiled step (the
    lockstep tests above check its results); elsewhere it declines and ``Trials.step`` runs."""
    act = torch.zeros(4, dtype=torch.long)
    for cfg, fused in ((dict(), True), (dict(trial_episodes=2), True), (dict(meta_obs=True), False),
                       (dict(action="hole"), False)):
        core = AllocCore(4, jit=True, cells=32, **cfg)
        core.reset(seed=0)
        assert (core.domain.fused_step(core, act) is not None) is fused, cfg
    core = AllocCore(4, jit=True, cells=32, autoreset=False)
    core.reset(seed=0)
    assert core.domain.fused_step(core, act) is None


RESUMED = [dict(cells=48, stream="mixed", action="hole", holes=4, summary=True, meta_obs=True, trial_episodes=2),
           # the sub-streams of a task stream write into one stacked tensor per field: copies get their own
           dict(cells=64, stream="tasks", stream_params=dict(tasks=[
               {"name": "e", "stream": "pattern", "params": {"lifetime": "exponential", "life": 9, "phase": "peak",
                                                             "phase_len": 25, "size_max": 8}},
               {"name": "f", "stream": "pattern", "params": {"lifetime": "fixed", "life": 7, "order": "lifo"}}]))]


@pytest.mark.parametrize("cfg", RESUMED, ids=["mixed", "tasks"])
def test_resume_and_copies_follow_the_torch_core(cfg):
    a, b = AllocCore(8, jit=False, **cfg), AllocCore(8, jit=True, **cfg)
    _lockstep(a, b, steps=120, seed=5)
    # a state written by one core continues identically in the other, and in a deep copy of the compiled one
    c = AllocCore(8, jit=True, **cfg)
    c.load_state_dict(a.state_dict())
    d = copy.deepcopy(b)
    rng = np.random.default_rng(9)
    info = a.current()[1]
    for t in range(150):
        act = _actions(info, a.spec.n_actions, 8, rng)
        ra = a.step(act)
        for other in (b, c, d):
            for i, (x, y) in enumerate(zip(ra, other.step(act), strict=True)):
                _same(x, y, f"step {t} item {i}")
        info = ra[4]


def test_a_heap_changed_by_hand_is_seen_by_the_compiled_step():
    a, b = AllocCore(4, jit=False, cells=32), AllocCore(4, jit=True, cells=32)
    a.reset(seed=0)
    b.reset(seed=0)
    for core in (a, b):  # the public HeapBatch API, behind the kernels' back
        core.heaps.allocate([3, 10, 0, 20], [2, 5, 1, 4])
    a.domain.runs = FreeRuns.of(a.heaps.occ)  # the torch core keeps its run table from its last step: refresh it
    act = torch.tensor([0, 1, 2, 0])
    for t in range(40):
        for i, (x, y) in enumerate(zip(a.step(act), b.step(act), strict=True)):
            _same(x, y, f"step {t} item {i}")


def test_runs_are_read_from_the_compiled_domain():
    core = AllocCore(3, jit=True, cells=32, stream="mixed")
    core.reset(seed=1)
    for _ in range(10):
        core.step(torch.tensor([0, 1, 2]))
    ref = AllocCore(3, jit=False, cells=32, stream="mixed")
    ref.reset(seed=1)
    for _ in range(10):
        ref.step(torch.tensor([0, 1, 2]))
    for k in ("heap", "start", "length", "offsets"):
        assert torch.equal(getattr(core.runs, k), getattr(ref.runs, k))


def test_where_the_compiled_step_runs():
    assert isinstance(AllocCore(2).domain, JitAllocDomain)  # the default on CPU in scope
    assert isinstance(AllocVectorEnv(2, cells=32, stream="mixed").core.domain, JitAllocDomain)
    for cfg in (dict(stream="pattern"), dict(stream="trace", stream_params={"path": "sed_swap"}), dict(ideal=True),
                dict(stream="tasks", stream_params={"tasks": [{"name": "a", "stream": "pattern"}]})):
        assert isinstance(AllocCore(2, cells=64, **cfg).domain, JitAllocDomain), cfg
    shifting = {"tasks": [{"name": "a", "stream": "pattern"}, {"name": "b", "stream": "random"}]}
    for cfg in (dict(on_fail="drop"), dict(skip_forced=True), dict(stream="preholed"),
                dict(stream="tasks", stream_params=shifting), dict(stream="shift", stream_params=shifting)):
        assert type(AllocCore(2, cells=64, **cfg).domain) is AllocDomain, cfg  # out of scope: the torch core
    with pytest.raises(ValueError, match="jit=True: it implements on_fail='end' only"):
        AllocCore(2, on_fail="drop", jit=True)
    with pytest.raises(ValueError, match="cannot run the 'preholed' stream"):
        AllocCore(2, stream="preholed", jit=True)
    with pytest.raises(ValueError, match="cannot run the 'tasks' stream"):
        AllocCore(2, stream="tasks", stream_params=shifting, jit=True)
    assert type(AllocCore(2, jit=False).domain) is AllocDomain


def test_the_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv("DREAMALLOC_JIT", "0")
    assert type(AllocCore(2).domain) is AllocDomain
    assert isinstance(AllocCore(2, jit=True).domain, JitAllocDomain)  # an explicit request still wins


def test_a_swapped_stream_hands_back_to_the_torch_methods():
    """The app replaces ``domain.stream``; the compiled domain then steps with the torch methods."""
    a, b = AllocCore(4, jit=False, cells=32), AllocCore(4, jit=True, cells=32)
    for core in (a, b):
        core.domain.stream = MixedStream(4, 32)
    _lockstep(a, b, steps=60, seed=2)


def test_errors_match_the_torch_core(monkeypatch):
    monkeypatch.setattr(MixedStream, "script", lambda self, rng: [(S_ALLOC, 2), (S_ALLOC, self.cells + 1)])
    for jit in (False, True):
        core = AllocCore(2, jit=jit, cells=32, stream="mixed")
        core.reset(seed=0)
        with pytest.raises(ValueError, match=r"request size must lie in \[1, 32\] \(the heap size\), got 33"):
            core.step(torch.tensor([0, 0]))


def test_compiled_generator_draws_are_numpys():
    """``jit_scripts`` reimplements numpy_generator (SeedSequence -> PCG64) and ``Generator.integers(0, n)``:
    the same values and the same PCG64 state after them, for seeds over all 64 bits, large episodes and ranges
    up to 2^32 - 1 (Lemire's rejection included)."""
    from dreamalloc.alloc import jit_scripts
    from dreamalloc.core.rng import numpy_generator

    rs = np.random.default_rng(4)
    for t in range(120):
        seed = int(rs.integers(-2**63, 2**63 - 1)) if t % 2 else int(rs.integers(0, 5))
        episode = int(rs.integers(0, 2**40)) if t % 7 == 0 else int(rs.integers(0, 60))
        salt = int(rs.integers(0, 9))
        ns = rs.integers(1, 2**32, 40) if t % 3 == 0 else rs.integers(1, 7, 40)
        ns[0] = 2**32 - 1 if t % 5 == 0 else ns[0]
        g = numpy_generator(seed, episode, salt)
        ref = [int(g.integers(0, int(n))) for n in ns]
        got, st = jit_scripts.generator_draws(seed, episode, salt, ns)
        assert got.tolist() == ref, (seed, episode, salt)
        want = g.bit_generator.state
        assert (int(st[0]) << 64 | int(st[1])) == want["state"]["state"]
        assert (int(st[2]) << 64 | int(st[3])) == want["state"]["inc"]
        assert (int(st[4]), int(st[5])) == (want["has_uint32"], want["uinteger"])


@pytest.mark.parametrize("cells", [20, 23, 48, 256, 1000, 4096])
def test_compiled_scripts_are_lims(cells):
    """bf-good, wf-good and mixed scripts drawn in compiled code equal ``lim.py``'s, step for step."""
    from dreamalloc.alloc import jit_scripts
    from dreamalloc.alloc.workloads.lim import BfGoodStream, WfGoodStream
    from dreamalloc.core.rng import numpy_generator

    rs = np.random.default_rng(cells)
    R, cap = 60, jit_scripts.max_script_len(cells)
    seeds, episodes = rs.integers(-2**63, 2**63 - 1, R), rs.integers(0, 1000, R)
    work, tmp = jit_scripts.work_arrays(cap)
    for cls in (BfGoodStream, WfGoodStream, MixedStream):
        stream = cls(1, cells)
        kind = jit_scripts.script_kind(stream)
        ops, sizes, lengths = np.ones((R, cap), np.int64), np.ones((R, cap), np.int64), np.zeros(R, np.int64)
        jit_scripts.draw(kind, seeds, episodes, stream.SALT, cells, ops, sizes, lengths, work, tmp)
        for r in range(R):
            want = stream.script(numpy_generator(int(seeds[r]), int(episodes[r]), stream.SALT))
            L = int(lengths[r])
            assert list(zip(ops[r, :L].tolist(), sizes[r, :L].tolist(), strict=True)) == \
                [(int(o), int(s)) for o, s in want], (cls.NAME, r)
            assert not ops[r, L:].any() and not sizes[r, L:].any()
    patched = type("Patched", (MixedStream,), {})  # a subclass (or a patched script) is drawn in Python
    assert jit_scripts.script_kind(patched(1, cells)) == 0


@pytest.mark.parametrize("cfg", [dict(cells=64), dict(cells=48, stream="mixed", trial_episodes=3, summary=True),
                                 dict(cells=48, stream="bf-good", action="hole", holes=3)],
                         ids=["random", "mixed-trials", "hole"])
def test_step_numpy_is_the_gym_faces_conversion_of_step(cfg):
    """``AllocCore.step_numpy`` (what ``AllocVectorEnv.step`` returns; built as numpy by the fused step, or
    converted where that does not apply) equals ``to_numpy`` of ``step`` on a twin core: every key, dtype, shape
    and value, nested dicts and the autoreset entries included."""
    from dreamalloc.core.gym_faces import to_numpy

    a, b = AllocCore(12, jit=True, **cfg), AllocCore(12, jit=True, **cfg)
    a.reset(seed=4)
    _, info = b.reset(seed=4)
    rng = np.random.default_rng(0)
    restarts = 0
    for t in range(200):
        act = _actions(info, a.spec.n_actions, 12, rng)
        out = a.step(act)
        rb = b.step_numpy(act)
        for i, (x, y) in enumerate(zip((to_numpy(v) for v in out), rb, strict=True)):
            assert isinstance(y, np.ndarray | dict), f"step {t} item {i}"
            _same(x, y, f"step {t} item {i}")
        restarts += int(rb[2].sum() + rb[3].sum())
        info = out[4]
    assert restarts > 5
