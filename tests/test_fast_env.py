"""The single-heap fast path (``alloc.fast.FastAllocCore``, what ``AllocEnv`` / ``gym.make("dreamalloc/Alloc-v0")``
run on) is the batched torch core, value for value: both are driven with the same seeds and actions and every
observation (bit for bit), reward, flag and info value (type and value) is compared, then the full core state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from script_module import load_script

from dreamalloc.alloc import AllocCore, AllocEnv
from dreamalloc.alloc.fast import FastAllocCore, _fast_stream
from dreamalloc.alloc.workloads.lim import pick
from dreamalloc.core.actions import ActionError
from dreamalloc.core.gym_faces import unbatch as _unbatch

SMALL = {"name": "small", "stream": "pattern", "params": {"size_min": 1, "size_max": 2, "free_prob": 0.5}}
BIG = {"name": "big", "stream": "pattern", "params": {"size_min": 6, "size_max": 8, "free_prob": 0.5}}

CONFIGS = {
    "mixed-heuristic": dict(cells=256, stream="mixed"),
    "random-heuristic-all-rules": dict(cells=64, stream="random", heuristics=("first", "next", "best", "worst",
                                                                                "second"), history=3),
    "bf-good-end-summary": dict(cells=100, stream="bf-good", align="end", summary=True, hole_features=2),
    "wf-good-fraction": dict(cells=90, stream="wf-good", size_scale="fraction", history=2, summary=True),
    "random-address": dict(cells=48, stream="random", action="address", summary=True, hole_features=3,
                           stream_params={"size_min": 2, "size_max": 7, "free_prob": 0.3}),
    "mixed-address-small-invalid": dict(cells=64, stream="mixed", action="address", max_invalid=3),
    "random-hole": dict(cells=40, stream="random", action="hole", holes=4, history=1,
                        stream_params={"size_min": 1, "size_max": 6}),
    "mixed-hole-end-meta": dict(cells=50, stream="mixed", action="hole", holes=3, align="end", meta_obs=True,
                                trial_episodes=3, size_scale="fraction"),
    "random-hole-by-size": dict(cells=48, stream="random", action="hole", holes=4, hole_order="size",
                                hole_features=3, summary=True, stream_params={"size_min": 1, "size_max": 6}),
    "terminal-zero-meta": dict(cells=32, stream="random", terminal_reward="zero", meta_obs=True, trial_episodes=2,
                               max_allocs=20),
    "terminal-alloc": dict(cells=33, stream="mixed", terminal_reward="alloc", summary=True),
    "skip-forced": dict(cells=64, stream="mixed", skip_forced=True, summary=True),
    "skip-forced-next": dict(cells=40, stream="random", skip_forced=True, heuristics=("first", "next"),
                             max_allocs=30),
    "skip-forced-hole-adversarial": dict(cells=256, stream="adversarial", action="hole", holes=8, hole_features=8,
                                         size_scale="fraction", skip_forced=True, heuristics=("best", "worst", "first"),
                                         bitmap=False, summary=True, meta_obs=True, trial_episodes=3, max_allocs=36,
                                         stream_params={"target": "worst", "blind": ["best", "worst", "first"],
                                                        "size_min": 1, "size_max": 1}),
    "skip-forced-address-next": dict(cells=40, stream="random", action="address", skip_forced=True,
                                     heuristics=("first", "next"), max_allocs=30),
    "next-fit-churn": dict(cells=24, stream="random", heuristics=("next", "second"), max_allocs=200,
                           stream_params={"size_min": 1, "size_max": 4, "free_prob": 0.6}),
    "ideal": dict(cells=32, stream="random", ideal=True, stream_params={"size_min": 1, "size_max": 8}),
    "ff-good": dict(cells=64, stream="ff-good"),
    "nf-good-address": dict(cells=64, stream="nf-good", action="address"),
    "pattern": dict(cells=64, stream="pattern", stream_params={"lifetime": "fixed", "life": 5}),
    "preholed": dict(cells=64, stream="preholed", heuristics=("first", "best")),
    "tasks-task-obs": dict(cells=64, stream="tasks", stream_params={"tasks": [SMALL, BIG]}, task_obs=True,
                           trial_episodes=2, meta_obs=True),
    "shift": dict(cells=96, stream="shift", stream_params={"tasks": [SMALL, BIG], "at": 12}, history=2),
}


def same(x, y, where: str = "") -> None:
    """Exact equality of two returned values: same types, numpy arrays bit for bit, dicts in the same key order."""
    assert type(x) is type(y), f"{where}: {type(x).__name__} != {type(y).__name__}"
    if isinstance(x, dict):
        assert list(x) == list(y), f"{where}: keys {list(x)} != {list(y)}"
        for k in x:
            same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, tuple | list):
        assert len(x) == len(y), where
        for i, (a, b) in enumerate(zip(x, y, strict=True)):
            same(a, b, f"{where}[{i}]")
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
        assert x.tobytes() == y.tobytes(), f"{where}: {x} != {y}"
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"


def drive(kw: dict, seed: int, steps: int):
    """Both envs, the same seed and actions (70 % valid by the torch env's mask, 30 % uniform, so invalid
    actions occur in the masked spaces); episodes that end restart without a seed (the next episode), one in
    five with a fresh seed. Yields the step index after each compared step."""
    fast, ref = AllocEnv(**kw), AllocEnv(fast=False, **kw)
    assert isinstance(fast.core, FastAllocCore) and not isinstance(ref.core, FastAllocCore)
    rng = np.random.default_rng(seed)
    same(fast.reset(seed=seed), ref.reset(seed=seed), "reset")
    for t in range(steps):
        mask = ref.action_masks()
        same(fast.action_masks(), mask, f"mask {t}")
        if rng.random() < 0.7:
            a = int(rng.choice(np.flatnonzero(mask)))
        else:
            a = int(rng.integers(fast.action_space.n))
        same(fast.step(a), ref.step(a), f"step {t} action {a}")
        if fast.core.needs_reset.item():
            s = int(rng.integers(1 << 40)) if rng.random() < 0.2 else None
            same(fast.reset(seed=s), ref.reset(seed=s), f"reset after step {t}")
    same_state(fast.core.state_dict(), ref.core.state_dict())
    return fast


def same_state(a, b, where: str = "state") -> None:
    """Two core state dicts hold the same tensors (nested dicts alike)."""
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_path_equals_torch_core(name):
    for seed in (0, 7):
        drive(CONFIGS[name], seed, 400)


def test_configs_cover_the_fast_streams_and_the_torch_fallback():
    kinds = {name: _fast_stream(AllocEnv(**kw).core.domain.stream) for name, kw in CONFIGS.items()}
    assert kinds["mixed-heuristic"] == "scripted" and kinds["random-address"] == "random"
    assert kinds["ff-good"] == "scripted"  # adversarial scripts run on the fast path too
    assert {kinds["pattern"], kinds["preholed"], kinds["tasks-task-obs"], kinds["shift"]} == {"torch"}


def test_single_env_defaults_to_the_fast_path_on_cpu_only():
    assert isinstance(AllocEnv(cells=16).core, FastAllocCore)
    assert not isinstance(AllocEnv(cells=16, fast=False).core, FastAllocCore)


def test_fast_and_batched_api_share_one_state():
    """Steps taken through the fast path and through the batched torch API of the same core continue each
    other: a fast core's state, loaded into a torch core, gives the same next steps."""
    kw = dict(cells=64, stream="mixed", action="address", summary=True)
    fast = FastAllocCore(**kw)
    fast.reset_one(3)
    rng = np.random.default_rng(3)
    for _ in range(25):
        m = fast.mask_one()
        fast.step_one(int(rng.choice(np.flatnonzero(m))) if m.any() else 0)
        if fast.needs_reset.item():
            fast.reset_one()
    torch_core = AllocCore(1, autoreset=False, **kw)
    torch_core.load_state_dict(fast.state_dict())
    obs, info = torch_core.current()
    assert torch.equal(obs, fast.current()[0])
    for _ in range(25):
        a = torch.as_tensor([int(rng.choice(np.flatnonzero(fast.mask_one())))])
        got = fast.step(a)  # the batched torch API of the fast core
        want = torch_core.step(a)
        assert all(torch.equal(x, y) for x, y in zip(got[:4], want[:4], strict=True))
        same(fast._info_one(), _unbatch(torch_core.current()[1]), "info")
        if bool(want[2] | want[3]):
            break
    same_state(fast.state_dict(), torch_core.state_dict())


def test_pick_is_numpy_choice():
    """``lim.pick`` (the scripts' draw) is the draw ``int(rng.choice(values))`` makes, and leaves the generator in
    the same state."""
    for seed in range(200):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        for values in ((2, 3, 4, 5), [25, 12, 8, 5, 2, 1], (1, 2, 3), [32, 28, 25], (7,)):
            assert pick(a, values) == int(b.choice(values))
        assert a.integers(0, 1 << 30) == b.integers(0, 1 << 30)


@pytest.mark.parametrize("bad", [True, 1.0, "best", None, 3, -1, np.float32(1), [0, 1]])
def test_fast_path_rejects_bad_actions_like_the_torch_core(bad):
    fast, ref = AllocEnv(cells=16), AllocEnv(cells=16, fast=False)
    fast.reset(seed=0)
    ref.reset(seed=0)
    with pytest.raises(ActionError) as got:
        fast.step(bad)
    with pytest.raises(ActionError) as want:
        ref.step(bad)
    assert str(got.value) == str(want.value)


def test_fast_path_accepts_the_integer_forms_the_torch_core_accepts():
    fast, ref = AllocEnv(cells=16), AllocEnv(cells=16, fast=False)
    same(fast.reset(seed=1), ref.reset(seed=1))
    for a in (np.int64(1), np.array(2), np.array([0]), torch.tensor(1), torch.tensor([2]), 0):
        same(fast.step(a), ref.step(a), repr(a))


def test_fast_path_step_before_reset_and_after_the_end_is_an_error():
    env = AllocEnv(cells=16, max_allocs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[3]  # truncated after max_allocs
    with pytest.raises(RuntimeError, match="has ended"):
        env.step(0)
    env.reset()
    env.step(0)


@pytest.mark.parametrize("align", ["start", "end"])
def test_fast_rules_masks_and_decoding_on_random_heaps(align):
    """Every placement rule, the address and hole decoding and the masks of the fast path against the torch
    functions on random heap layouts, rovers and request sizes (a run ending exactly at the rover included:
    next fit treats it as before the rover)."""
    from dreamalloc.alloc.heap import RULES, FreeRuns, place_address

    rng = np.random.default_rng(5)
    cells = 30
    for action, order in (("heuristic", "address"), ("address", "address"), ("hole", "address"), ("hole", "size")):
        core = FastAllocCore(cells=cells, stream="random", action=action, heuristics=RULES, holes=5, align=align,
                             hole_order=order)
        core.reset_one(0)
        heaps = core.heaps
        at_rover = 0
        for _ in range(300):
            heaps.reset()
            for _ in range(int(rng.integers(0, 12))):
                a, s = int(rng.integers(0, cells)), int(rng.integers(1, 6))
                heaps.allocate(a, min(s, cells - a), heaps=[0])
            runs = FreeRuns.of(heaps.occ)
            ends = (runs.start + runs.length).tolist()
            heaps.rover[0] = int(rng.choice(ends)) % cells if ends and rng.random() < 0.5 else int(
                rng.integers(0, cells))
            at_rover += int(heaps.rover[0]) in ends
            size = int(rng.integers(1, 8))
            core.request[0] = size
            s = torch.tensor([size])
            if action == "heuristic":
                for rule in RULES:
                    want = int(place_address(runs, s, rule, heaps.rover, align)[0])
                    assert core._rule_address(rule, size) == want, (rule, size)
                assert core.mask_one() is None
            else:
                assert core.mask_one().tolist() == core.domain.action_mask()[0].tolist()
                for a in range(core.domain.n_actions):
                    addr, valid = core.domain.addresses(torch.tensor([a]))
                    assert core._decode(a) == (int(addr[0]) if bool(valid[0]) else -1), (a, size)
        assert at_rover > 50


def _bench_env():

    bench = load_script("bench_env")
    return bench


def test_bench_env_single_prints_its_ratios(capsys, tmp_path):
    """A smoke run of ``bench_env.py --single`` (the table's keys, not the speed); ``--peer`` needs a checkout."""
    bench = _bench_env()
    assert bench.main(["--single", "--cells", "64", "--seconds", "0.05"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    keys = dict(line.split(": ", 1) for line in lines[-3:])
    assert list(keys) == ["single_env_us_per_step", "single_env_speedup_vs_torch_core",
                          "single_env_speedup_vs_reference"]
    assert all(float(v) > 0 for v in keys.values())
    with pytest.raises(SystemExit, match="stable_baselines_env_history.py"):
        bench.main(["--single", "--seconds", "0.05", "--peer", str(tmp_path)])


def test_bench_env_batched_prints_its_ratios(capsys, tmp_path):
    """A smoke run of ``bench_env.py --batched`` (the keys, not the speed)."""
    bench = _bench_env()
    assert bench.main(["--batched", "--batch", "8", "--cells", "64", "--seconds", "0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    keys = dict(line.split(": ", 1) for line in lines[-7:])
    assert list(keys) == ["batched_heap_steps_per_s", "batched_speedup_vs_torch_core",
                          "batched_mixed_speedup_vs_reference", "batched_speedup_vs_reference",
                          "batched_core_heap_steps_per_s", "batched_core_speedup_vs_reference",
                          "batched_core_mixed_speedup_vs_reference"]
    assert all(float(v) > 0 for v in keys.values())
    with pytest.raises(SystemExit, match="stable_baselines_env_history.py"):
        bench.main(["--batched", "--seconds", "0.05", "--peer", str(tmp_path)])


def test_reference_page_env_places_by_rule_and_ends_when_nothing_fits():
    """The peer-free reference of the benchmark is a working allocator env: each action places the pending request
    by its rule (0 best, 1 worst, 2 first), and an episode ends on a request that fits nowhere."""
    env = _bench_env().RefPageEnv(cells=64)
    obs, _ = env.reset()
    assert obs.shape == (1, 65) and obs[0, 64] == env.request
    ends = 0
    kinds = ("best", "worst", "first")
    for t in range(3000):
        runs = [(r["idx"], r["size"]) for r in env.free_list if r["size"] >= env.request]
        a = t % 3
        want = {0: min(runs, key=lambda r: (r[1], r[0]))[0], 1: max(runs, key=lambda r: (r[1], -r[0]))[0],
                2: runs[0][0]}[a]
        assert env._Rule(kinds[a]).address(env.free_list, env.request) == want
        allocs = env.allocs
        _, r, done, _, _ = env.step(a)
        assert env.allocs == allocs + 1
        if done:
            assert r == 0.0
            assert env.allocs > env.horizon or all(x["size"] < env.request for x in env.free_list)
            env.reset()
            ends += 1
    assert ends > 10


def _through_checkpoint(env, path):
    """A fresh fast env holding ``env``'s state, saved and read back as a safetensors checkpoint (no pickle)."""
    from dreamalloc.experiment.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(path, {"env": env.core.state_dict()})
    twin = AllocEnv(cells=64, stream="mixed", action="address", summary=True)
    twin.reset(seed=99)
    twin.core.load_state_dict(load_checkpoint(path)["env"])
    return twin


@pytest.mark.parametrize("how", ["deepcopy", "checkpoint"])
def test_a_copied_fast_env_continues_alone(how, tmp_path):
    """copy.deepcopy of a fast env mid-episode (planners copy envs), or its state through a checkpoint file into a
    fresh one: the copy steps as the original would, on its own state (the numpy views are rebuilt, not shared)."""
    import copy

    env = AllocEnv(cells=64, stream="mixed", action="address", summary=True)
    env.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(15):
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        if env.core.needs_reset.item():
            env.reset()
    twin = copy.deepcopy(env) if how == "deepcopy" else _through_checkpoint(env, tmp_path / "env.safetensors")
    assert twin.core.heaps.occ.data_ptr() != env.core.heaps.occ.data_ptr()
    before = copy.deepcopy(env.core.state_dict())
    ref = AllocEnv(fast=False, cells=64, stream="mixed", action="address", summary=True)
    ref.core.load_state_dict(before)
    for _ in range(30):
        a = int(rng.choice(np.flatnonzero(ref.action_masks())))
        want = ref.step(a)
        same(twin.step(a), want)
        if want[2] or want[3]:
            break
    same_state(env.core.state_dict(), before)  # the original did not move
    same_state(twin.core.state_dict(), ref.core.state_dict())
