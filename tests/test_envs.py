"""Tests of the gymnasium allocation environments (dreamalloc.alloc): spaces, observations, rewards,
termination / truncation, the native vector env and its SAME_STEP autoreset, determinism, the ideal
(compacting) bound, address / hole masks, and input validation.

Spec: docs/reference.md section 1 (Lim & Maddukuri 2024) and the docstrings of dreamalloc/alloc/*.py and
dreamalloc/core/trials.py.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dreamalloc  # noqa: F401  (registers dreamalloc/Alloc-v0)
from dreamalloc.alloc import ALLOC_ID, AllocConfig, AllocEnv, AllocVectorEnv

ALLOC_R = np.float32(0.1)
INVALID_R = -10.0
ONLY_ALLOCS = {"free_prob": 0.0}  # stream_params: the random stream never frees


# --------------------------------------------------------------------------------------------------
# brute-force references computed from the bitmap alone
# --------------------------------------------------------------------------------------------------
def free_runs(bits) -> list[tuple[int, int]]:
    """Maximal free runs (start, length) of a 0/1 bitmap, in address order."""
    runs, start = [], None
    for i, b in enumerate(list(np.asarray(bits).astype(int)) + [1]):
        if b == 0 and start is None:
            start = i
        elif b != 0 and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def address_mask_ref(bits, size: int) -> np.ndarray:
    bits = np.asarray(bits).astype(bool)
    n = bits.size
    return np.array([a + size <= n and not bits[a:a + size].any() for a in range(n)])


def fitting_runs(bits, size: int) -> list[tuple[int, int]]:
    return [(s, ln) for s, ln in free_runs(bits) if ln >= size]


def masked_choice(mask: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(mask)))


def run_episode(env: AllocEnv, policy, seed=None, max_steps: int = 5000):
    """Roll one episode; returns (rewards, infos, obs list incl. reset obs, terminated, truncated)."""
    obs, info = env.reset(seed=seed)
    obs_l, infos, rewards = [obs], [info], []
    for _ in range(max_steps):
        obs, r, term, trunc, info = env.step(policy(obs, info))
        obs_l.append(obs)
        infos.append(info)
        rewards.append(r)
        if term or trunc:
            return rewards, infos, obs_l, term, trunc
    raise AssertionError(f"episode did not end within {max_steps} steps")


def const(a):
    return lambda obs, info: a


# --------------------------------------------------------------------------------------------------
# spaces and observation layout
# --------------------------------------------------------------------------------------------------
def test_config_defaults():
    cfg = AllocConfig().validate()
    assert cfg.cells == 256 and cfg.stream == "random" and cfg.action == "heuristic"
    assert cfg.heuristics == ("best", "worst", "first")
    assert cfg.max_allocs == 512
    assert cfg.alloc_reward == pytest.approx(0.1) and cfg.invalid_reward == -10.0
    assert cfg.terminal_reward == "lim" and cfg.size_scale == "raw"


def test_heuristic_space_default_order_and_obs():
    env = AllocEnv(cells=32, stream="random")
    assert env.action_space == gym.spaces.Discrete(3)
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert env.observation_space.dtype == np.float32 and env.observation_space.shape == (33,)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (33,)
    assert (obs[:32] == 0).all()  # empty heap at reset
    assert obs[32] == info["request"] and 1 <= info["request"] <= 5
    assert env.observation_space.contains(obs)
    assert env.action_masks().tolist() == [True] * 3
    assert "action_mask" not in info
    assert AllocEnv(cells=32, heuristics=("first", "next")).action_space == gym.spaces.Discrete(2)


def test_heuristic_order_best_worst_first():
    """Lim's action order: 0 = best, 1 = worst, 2 = first; each places at the start of the chosen run."""
    # build a heap with runs of lengths 3 (at 0), 10 and 5 by address placement, then compare heuristics
    cells = 32
    env = AllocEnv(cells=cells, action="heuristic", stream="random",
                   stream_params={"free_prob": 0.0, "size_min": 2, "size_max": 2})
    env.reset(seed=0)
    heaps = env.core.heaps
    # occupy everything except [0,3), [5,15), [20,25)
    occupied = [(3, 2), (15, 5), (25, 7)]
    for addr, size in occupied:
        assert bool(heaps.allocate(addr, size, heaps=[0])[0])
    env.core.runs = type(env.core.runs).of(heaps.occ)
    state = env.core.state_dict()
    expected = {0: 0, 1: 5, 2: 0}  # request 2: best -> run of 3 at 0, worst -> run of 10 at 5, first -> 0
    for action, addr in expected.items():
        env.core.load_state_dict(state)
        before = heaps.occ[0].clone().numpy()
        obs, r, term, trunc, _ = env.step(action)
        placed = obs[:cells].astype(bool) & ~before
        assert r == pytest.approx(0.1)
        assert np.flatnonzero(placed).tolist() == [addr, addr + 1]


def test_address_space_mask_matches_bitmap():
    cells = 48
    env = AllocEnv(cells=cells, stream="random", action="address")
    assert env.action_space == gym.spaces.Discrete(cells)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=3)
    checked = 0
    for _ in range(200):
        m = info["action_mask"]
        assert m.dtype == bool and m.shape == (cells,)
        np.testing.assert_array_equal(env.action_masks(), m)
        np.testing.assert_array_equal(m, address_mask_ref(obs[:cells], int(obs[cells])))
        checked += 1
        obs, r, term, trunc, info = env.step(masked_choice(m, rng))
        assert r != INVALID_R
        if term or trunc:
            obs, info = env.reset()
    assert checked == 200


def test_address_places_at_chosen_address():
    cells = 32
    env = AllocEnv(cells=cells, stream="random", action="address", stream_params=ONLY_ALLOCS)
    obs, info = env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(6):
        size = int(obs[cells])
        a = masked_choice(info["action_mask"], rng)
        before = obs[:cells].copy()
        obs, r, term, trunc, info = env.step(a)
        assert r == pytest.approx(0.1) or (term and r == 0.0)
        new = np.flatnonzero(obs[:cells] - before)
        assert new.tolist() == list(range(a, a + size))
        if term:
            break


def test_hole_space_mask_and_placement():
    cells = 40
    holes = 4
    env = AllocEnv(cells=cells, stream="random", action="hole", holes=holes,
                   stream_params={"free_prob": 0.0, "size_min": 1, "size_max": 3})
    assert env.action_space == gym.spaces.Discrete(holes)
    obs, info = env.reset(seed=0)
    # carve several holes with address-level allocations so that the k-th fitting run is meaningful
    heaps = env.core.heaps
    for addr, size in [(2, 1), (6, 2), (12, 1), (20, 3), (30, 1)]:
        assert bool(heaps.allocate(addr, size, heaps=[0])[0])
    env.core.runs = type(env.core.runs).of(heaps.occ)
    state = env.core.state_dict()
    bits = heaps.occ[0].numpy().astype(np.float32)
    size = int(env.core.request[0])
    runs = fitting_runs(bits, size)
    mask = env.action_masks()
    np.testing.assert_array_equal(mask, np.arange(holes) < len(runs))
    for k in range(holes):
        env.core.load_state_dict(state)
        obs, r, term, trunc, info = env.step(k)
        if k < len(runs):
            assert r == pytest.approx(0.1)
            placed = np.flatnonzero(obs[:cells].astype(bool) & ~bits.astype(bool))
            assert placed.tolist() == list(range(runs[k][0], runs[k][0] + size))
        else:
            assert r == INVALID_R and not term and not trunc
            np.testing.assert_array_equal(obs[:cells], bits)


@pytest.mark.parametrize("jit", [False, True])
def test_holes_by_size_list_the_shortest_fitting_runs_first(jit):
    """``hole_order="size"``: hole k is the k-th shortest run that fits (ties: lower address), so hole 0 is where
    best fit places; the hole features list the same runs. Free runs here (start, length): (0, 5), (6, 2),
    (9, 3), (13, 2), (16, 24); a request of 2 fits all five."""
    import torch

    from dreamalloc.alloc import AllocCore

    for order, want in (("address", [(0, 5), (6, 2), (9, 3), (13, 2)]), ("size", [(6, 2), (13, 2), (9, 3), (0, 5)])):
        core = AllocCore(1, jit=jit, cells=40, stream="random", action="hole", holes=4, hole_order=order,
                         hole_features=4, bitmap=False, stream_params={"free_prob": 0.0, "size_min": 2, "size_max": 2})
        core.reset(seed=0)
        core.heaps.reset()
        for addr, size in [(5, 1), (8, 1), (12, 1), (15, 1)]:
            assert bool(core.heaps.allocate(addr, size, heaps=[0])[0])
        core.domain.runs = type(core.domain.runs).of(core.heaps.occ)
        obs = core.domain.observe()[0]
        feats = obs[-8:].view(4, 2) * 40
        assert [(round(float(a)), round(float(b))) for a, b in feats] == want, order
        state = core.state_dict()
        for k, (start, _) in enumerate(want):
            core.load_state_dict(state)
            core.step(torch.tensor([k]))
            assert int(core.domain.placed_at[0]) == start, (order, k)
    best = AllocCore(1, jit=jit, cells=40, stream="random", heuristics=("best",),
                     stream_params={"free_prob": 0.0, "size_min": 2, "size_max": 2})
    best.load_state_dict(state)
    best.step(torch.tensor([0]))
    assert int(best.domain.placed_at[0]) == want[0][0]  # hole 0 by size is best fit's choice


def test_hole_mask_random_states():
    cells = 32
    env = AllocEnv(cells=cells, stream="random", action="hole", holes=3, hole_features=3)
    rng = np.random.default_rng(5)
    obs, info = env.reset(seed=11)
    for _ in range(300):
        bits, size = obs[:cells], int(obs[cells])
        runs = fitting_runs(bits, size)
        np.testing.assert_array_equal(info["action_mask"], np.arange(3) < len(runs))
        feats = obs[cells + 1:].reshape(3, 2)
        for k in range(3):
            exp = (runs[k][0] / cells, runs[k][1] / cells) if k < len(runs) else (0.0, 0.0)
            np.testing.assert_allclose(feats[k], exp, rtol=0, atol=1e-6)
        obs, r, term, trunc, info = env.step(masked_choice(info["action_mask"], rng))
        assert r != INVALID_R
        if term or trunc:
            obs, info = env.reset()


def test_observation_parts_history_summary_holes_fraction():
    cells, n_hist, k = 64, 3, 2
    env = AllocEnv(cells=cells, stream="random", history=n_hist, summary=True, hole_features=k,
                   size_scale="fraction")
    dim = cells + 1 + n_hist + 4 + 2 * k
    assert env.observation_space.shape == (dim,)
    obs, info = env.reset(seed=7)
    placed = []  # request sizes placed, oldest first
    for t in range(40):
        bits = obs[:cells]
        req = info["request"]
        assert obs[cells] == pytest.approx(req / cells)
        hist = obs[cells + 1: cells + 1 + n_hist]
        exp_hist = [s / cells for s in placed[::-1][:n_hist]]
        exp_hist += [-1.0] * (n_hist - len(exp_hist))
        np.testing.assert_allclose(hist, exp_hist, atol=1e-6)
        runs = free_runs(bits)
        free = sum(ln for _, ln in runs)
        largest = max([ln for _, ln in runs] + [0])
        summ = obs[cells + 1 + n_hist: cells + 5 + n_hist]
        frag = 1 - largest / free if free else 0.0
        np.testing.assert_allclose(summ, [free / cells, largest / cells, len(runs) / cells, frag], atol=1e-6)
        assert info["free_cells"] == free and info["largest_free"] == largest
        assert info["free_runs"] == len(runs)
        assert info["utilisation"] == pytest.approx(1 - free / cells)
        assert info["frag_largest"] == pytest.approx(frag, abs=1e-6)
        assert env.observation_space.contains(obs)
        obs, r, term, trunc, info = env.step(t % 3)
        placed.append(req)
        if term or trunc:
            break


def test_raw_request_and_history_start_at_minus_one():
    env = AllocEnv(cells=32, stream="random", history=4)
    obs, info = env.reset(seed=0)
    assert obs[32] == info["request"]
    np.testing.assert_array_equal(obs[33:], [-1, -1, -1, -1])
    r0 = info["request"]
    obs, *_ , info = env.step(0)
    assert obs[33] == r0 and (obs[34:] == -1).all()


def test_bitmap_off():
    env = AllocEnv(cells=32, bitmap=False, summary=True)
    assert env.observation_space.shape == (5,)
    obs, info = env.reset(seed=0)
    assert obs[0] == info["request"]
    np.testing.assert_allclose(obs[1:], [1.0, 1.0, 1 / 32, 0.0])


def test_align_end_places_at_end_of_run():
    env = AllocEnv(cells=32, align="end", stream_params=ONLY_ALLOCS)
    obs, info = env.reset(seed=0)
    size = info["request"]
    obs, r, *_ = env.step(2)  # first fit
    assert np.flatnonzero(obs[:32]).tolist() == list(range(32 - size, 32))


def test_render_ansi():
    env = AllocEnv(cells=16, render_mode="ansi", stream_params=ONLY_ALLOCS)
    _, info = env.reset(seed=0)
    text = env.render()
    assert text.startswith("." * 16) and f"request={info['request']}" in text


def test_render_rgb_array_is_the_memory_map():
    env = AllocEnv(cells=10, render_mode="rgb_array", stream_params=ONLY_ALLOCS)
    env.reset(seed=0)
    env.step(2)  # first fit: cells [0, size) become used
    occ = env.core.heaps.occ[0].cpu().numpy().astype(bool)
    img = env.render()
    px = AllocEnv.CELL_PX
    assert img.dtype == np.uint8 and img.shape == (3 * px, 4 * px, 3)  # 10 cells on a 4-wide grid, 3 rows
    cells = img[::px, ::px].reshape(-1, 3)  # one pixel per cell, row-major
    used, free = cells[np.flatnonzero(occ)[0]], cells[np.flatnonzero(~occ)[0]]
    assert occ.any() and (~occ).any() and not np.array_equal(used, free)
    for i, o in enumerate(occ):
        assert np.array_equal(cells[i], used if o else free), i
    assert not np.array_equal(cells[10], free) and not np.array_equal(cells[10], used)  # padding


# --------------------------------------------------------------------------------------------------
# gymnasium conformance
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["heuristic", "address", "hole"])
@pytest.mark.parametrize("features", [{}, {"history": 3, "summary": True, "hole_features": 2},
                                      {"size_scale": "fraction", "history": 2}])
def test_check_env_random(action, features):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(AllocEnv(cells=32, stream="random", action=action, **features), skip_render_check=True)


@pytest.mark.parametrize("action", ["heuristic", "address", "hole"])
def test_check_env_mixed(action):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(AllocEnv(cells=64, stream="mixed", action=action, history=2), skip_render_check=True)


def test_gym_make_and_make_vec():
    env = gym.make(ALLOC_ID, cells=32, stream="random", action="address")
    obs, info = env.reset(seed=0)
    assert obs.shape == (33,) and env.action_space == gym.spaces.Discrete(32)
    obs, r, term, trunc, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
    assert r == pytest.approx(0.1) or term
    env.close()

    venv = gym.make_vec(ALLOC_ID, num_envs=4, vectorization_mode="vector_entry_point", cells=32,
                        stream="random")
    assert isinstance(venv.unwrapped, AllocVectorEnv)
    assert venv.num_envs == 4
    assert venv.single_action_space == gym.spaces.Discrete(3)
    assert venv.action_space == gym.spaces.MultiDiscrete([3] * 4)
    assert venv.observation_space.shape == (4, 33)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, info = venv.reset(seed=0)
    assert obs.shape == (4, 33) and obs.dtype == np.float32
    obs, r, term, trunc, info = venv.step(np.array([0, 1, 2, 0]))
    assert r.shape == (4,) and term.shape == (4,) and trunc.shape == (4,)
    assert info["request"].shape == (4,)
    venv.close()


# --------------------------------------------------------------------------------------------------
# rewards, termination, truncation, episode statistics
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("terminal_reward", ["lim", "zero", "alloc"])
@pytest.mark.parametrize("action", [0, 1, 2])
def test_reward_termination_and_episode_stats(terminal_reward, action):
    env = AllocEnv(cells=32, stream="random", terminal_reward=terminal_reward)
    n_freed_terminal = n_direct_terminal = 0
    for seed in range(15):
        rewards, infos, obs_l, term, trunc = run_episode(env, const(action), seed=seed)
        assert term and not trunc  # 32 cells never reach 64 allocations with sizes 1..5 here
        for i, r in enumerate(rewards[:-1]):
            assert r == pytest.approx(0.1)
            assert "episode" not in infos[i + 1]
            assert infos[i + 1]["largest_free"] >= infos[i + 1]["request"]  # the next request fits
        last = infos[-1]
        assert last["largest_free"] < last["request"]  # terminated: the next request fits nowhere
        # were frees applied between the last placement and the failing request?
        prev = infos[-2]
        freed = last["free_cells"] > prev["free_cells"] - prev["request"]
        expected = {"lim": 0.1 if freed else 0.0, "zero": 0.0, "alloc": 0.1}[terminal_reward]
        assert rewards[-1] == pytest.approx(expected)
        n_freed_terminal += freed
        n_direct_terminal += not freed
        ep = last["episode"]
        assert ep["l"] == len(rewards) == last["allocations"]
        assert ep["r"] == pytest.approx(sum(rewards), abs=1e-9)
        if terminal_reward == "alloc":
            assert ep["r"] == pytest.approx(0.1 * last["allocations"], abs=1e-5)
        with pytest.raises(RuntimeError):
            env.step(action)
    assert n_freed_terminal > 0 and n_direct_terminal > 0  # both lim cases were exercised


def test_terminal_reward_modes_same_trajectory():
    out = {}
    for mode in ("lim", "zero", "alloc"):
        env = AllocEnv(cells=32, stream="random", terminal_reward=mode)
        out[mode] = [run_episode(env, const(2), seed=s) for s in range(5)]
    for s in range(5):
        ra, rb, rc = (out[m][s][0] for m in ("lim", "zero", "alloc"))
        assert len(ra) == len(rb) == len(rc)
        assert ra[:-1] == rb[:-1] == rc[:-1]
        assert rb[-1] == 0.0 and rc[-1] == pytest.approx(0.1)
        for oa, ob in zip(out["lim"][s][2], out["zero"][s][2], strict=True):
            np.testing.assert_array_equal(oa, ob)


def test_truncation_at_max_allocs_default_2n():
    cells = 16
    # size-1 requests and frequent frees never fill 16 cells; the episode must be truncated at 2 * 16
    env = AllocEnv(cells=cells, stream="random", stream_params={"free_prob": 0.9, "size_min": 1, "size_max": 1})
    for seed in range(3):
        rewards, infos, _, term, trunc = run_episode(env, const(0), seed=seed)
        assert trunc and not term
        assert len(rewards) == 2 * cells and infos[-1]["allocations"] == 2 * cells
        assert all(r == pytest.approx(0.1) for r in rewards)
        assert infos[-1]["episode"]["r"] == pytest.approx(0.1 * 2 * cells, abs=1e-5)
        assert infos[-1]["episode"]["l"] == 2 * cells
        with pytest.raises(RuntimeError):
            env.step(0)


def test_truncation_custom_max_allocs():
    env = AllocEnv(cells=256, stream="random", max_allocs=5)
    rewards, infos, _, term, trunc = run_episode(env, const(2), seed=0)
    assert trunc and not term and len(rewards) == 5
    assert sum(rewards) == pytest.approx(0.5, abs=1e-6)


def test_invalid_address_changes_nothing():
    cells = 32
    env = AllocEnv(cells=cells, stream="random", action="address", history=2, summary=True)
    obs, info = env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):  # make the heap non-trivial first
        obs, r, term, trunc, info = env.step(masked_choice(info["action_mask"], rng))
        assert not (term or trunc)
    invalid = np.flatnonzero(~info["action_mask"])
    assert invalid.size
    total = 0.0
    steps = 5
    for a in invalid[:4]:
        obs2, r, term, trunc, info2 = env.step(int(a))
        steps += 1
        total += r
        assert r == INVALID_R and not term and not trunc
        np.testing.assert_array_equal(obs2, obs)
        assert info2["request"] == info["request"]
        assert info2["allocations"] == info["allocations"] == 5
        np.testing.assert_array_equal(info2["action_mask"], info["action_mask"])
    # the episode goes on; its statistics count the invalid steps
    rewards, infos, *_ = run_episode_continue(env, info2, lambda o, i: masked_choice(i["action_mask"], rng))
    ep = infos[-1]["episode"]
    assert ep["l"] == steps + len(rewards)
    assert ep["r"] == pytest.approx(0.1 * 5 + 4 * INVALID_R + sum(rewards), abs=1e-6)


def run_episode_continue(env, info, policy, max_steps=5000):
    rewards, infos = [], [info]
    obs = None
    for _ in range(max_steps):
        obs, r, term, trunc, info = env.step(policy(obs, info))
        rewards.append(r)
        infos.append(info)
        if term or trunc:
            return rewards, infos
    raise AssertionError("episode did not end")


def test_invalid_address_out_of_heap_end():
    """An address whose window runs past the end of the heap is invalid (not wrapped, not clipped)."""
    cells = 32
    env = AllocEnv(cells=cells, stream="random", action="address",
                   stream_params={"free_prob": 0.0, "size_min": 3, "size_max": 3})
    obs, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True] * 30 + [False] * 2
    obs2, r, term, trunc, _ = env.step(31)
    assert r == INVALID_R and not term
    np.testing.assert_array_equal(obs2, obs)
    obs3, r, *_ = env.step(29)
    assert r == pytest.approx(0.1) and obs3[29:32].tolist() == [1, 1, 1]


def test_invalid_hole_changes_nothing():
    env = AllocEnv(cells=32, stream="random", action="hole", holes=4, history=1)
    obs, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True, False, False, False]  # empty heap: one run
    for k in (1, 2, 3):
        obs2, r, term, trunc, info2 = env.step(k)
        assert r == INVALID_R and not term and not trunc
        np.testing.assert_array_equal(obs2, obs)
        assert info2["request"] == info["request"]
    obs3, r, term, trunc, _ = env.step(0)
    assert r == pytest.approx(0.1) and not term
    assert obs3[:32].sum() > 0


@pytest.mark.parametrize("action,n", [("address", 32), ("hole", 8)])
def test_masked_random_policy_never_invalid(action, n):
    env = AllocEnv(cells=32, stream="random", action=action)
    rng = np.random.default_rng(123)
    for seed in range(10):
        rewards, infos, *_ = run_episode(env, lambda o, i: masked_choice(i["action_mask"], rng), seed=seed)
        assert INVALID_R not in rewards
        assert all(r in (np.float32(0.1), 0.0) for r in rewards)


def test_masked_random_mixed_address():
    env = AllocEnv(cells=64, stream="mixed", action="address")
    rng = np.random.default_rng(0)
    for seed in range(4):
        rewards, infos, *_ = run_episode(env, lambda o, i: masked_choice(i["action_mask"], rng), seed=seed)
        assert INVALID_R not in rewards
        assert infos[-1]["episode"]["r"] == pytest.approx(sum(rewards), abs=1e-6)


# --------------------------------------------------------------------------------------------------
# the bf-good hand check (docs/reference.md section 1)
# --------------------------------------------------------------------------------------------------
BIGS = {256 // k for k in (2, 3, 4, 5)}
SMALLS = {256 // m for m in (10, 20, 30, 50, 100, 200)}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("action", [2, 1])  # first fit, worst fit
def test_bf_good_first_and_worst_fit_fail(seed, action):
    cells = 256
    env = AllocEnv(cells=cells, stream="bf-good")
    obs, info = env.reset(seed=seed)
    big = info["request"]
    assert big in BIGS
    requests = [big]
    rewards = []
    while True:
        prev = info
        obs, r, term, trunc, info = env.step(action)
        rewards.append(r)
        if term or trunc:
            break
        requests.append(info["request"])
    assert term and not trunc
    n_alloc = info["allocations"]
    # the episode ends right after the "alloc 1" that follows the free of the big block
    assert requests[-1] == 1 and info["request"] == big
    assert prev["request"] == 1 and prev["largest_free"] == big and prev["free_cells"] == 2 * big - 1
    assert info["largest_free"] == big - 1 and info["free_cells"] == 2 * big - 2
    assert obs[0] == 1 and not obs[1:big].any()  # the 1 went into the big hole at address 0
    assert (obs[cells - big + 1:cells] == 0).all() and obs[cells - big] == 1
    # scripted sizes: big, smalls..., pad, then 1
    assert all(s in SMALLS for s in requests[1:-2])
    pad = requests[-2]
    assert 1 <= pad and big + sum(requests[1:-2]) + pad == cells - big + 1
    assert rewards[-1] == 0.0  # lim: the failing request came straight after the placement
    assert n_alloc == len(requests) == len(rewards)
    assert sum(rewards) == pytest.approx(0.1 * (n_alloc - 1), abs=1e-5)
    assert info["episode"]["r"] == pytest.approx(0.1 * (n_alloc - 1), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_bf_good_best_fit_survives(seed):
    cells = 256
    env = AllocEnv(cells=cells, stream="bf-good")
    obs, info = env.reset(seed=seed)
    big = info["request"]
    infos, rewards = [info], []
    while True:
        obs, r, term, trunc, info = env.step(0)  # best fit
        infos.append(info)
        rewards.append(r)
        if term or trunc:
            break
    # step i is the first one after which frees were applied: the free of the big (oldest) block
    i = next(k for k in range(1, len(infos))
             if infos[k]["free_cells"] > infos[k - 1]["free_cells"] - infos[k - 1]["request"])
    assert infos[i]["request"] == 1 and infos[i]["free_cells"] == 2 * big - 1
    assert infos[i]["largest_free"] == big
    # best fit puts the 1 into the (big - 1)-cell hole, so the big request that follows still fits ...
    assert infos[i + 1]["request"] == big and infos[i + 1]["largest_free"] == big
    assert rewards[i] == pytest.approx(0.1) and rewards[i + 1] == pytest.approx(0.1)
    assert infos[i + 2]["allocations"] == i + 2
    # ... and the episode goes on into the random stream
    assert len(rewards) > i + 2 and infos[-1]["allocations"] > i + 2
    assert infos[-1]["episode"]["r"] > 0.1 * (i + 1)


# --------------------------------------------------------------------------------------------------
# determinism and the batched env
# --------------------------------------------------------------------------------------------------
def trajectory(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out += [obs, r, term, trunc]
        if term or trunc:
            obs, info = env.reset()
            out.append(obs)
    return out


def traj_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("stream,cells", [("random", 32), ("mixed", 64), ("wf-good", 64)])
def test_same_seed_same_trajectory(stream, cells):
    actions = np.random.default_rng(0).integers(0, 3, 250)
    t1 = trajectory(AllocEnv(cells=cells, stream=stream), 42, actions)
    t2 = trajectory(AllocEnv(cells=cells, stream=stream), 42, actions)
    t3 = trajectory(AllocEnv(cells=cells, stream=stream), 43, actions)
    assert traj_equal(t1, t2)
    assert not traj_equal(t1, t3)
    # a reused env reseeded gives the same again
    env = AllocEnv(cells=cells, stream=stream)
    trajectory(env, 7, actions[:30])
    assert traj_equal(trajectory(env, 42, actions), t1)


def test_unseeded_reset_differs_between_envs():
    a = [AllocEnv(cells=64, stream="random") for _ in range(2)]
    acts = [0] * 60
    outs = []
    for env in a:
        env.reset()
        o = []
        for x in acts:
            obs, r, term, trunc, _ = env.step(x)
            o.append(obs)
            if term or trunc:
                env.reset()
        outs.append(o)
    assert not traj_equal(outs[0], outs[1])


@pytest.mark.parametrize("stream,cells,action,features", [
    ("random", 32, "heuristic", {}),
    ("random", 32, "address", {"history": 2, "summary": True, "hole_features": 2}),
    ("random", 32, "hole", {"summary": True, "hole_features": 3, "history": 3, "size_scale": "fraction"}),
    ("mixed", 64, "heuristic", {"history": 3, "summary": True}),
    ("bf-good", 64, "heuristic", {"terminal_reward": "alloc", "hole_features": 1}),
    ("wf-good", 64, "heuristic", {"heuristics": ("first", "next", "second", "best"), "max_allocs": 40}),
])
def test_vector_matches_single_across_autoresets(stream, cells, action, features):
    B, seed, T = 4, 100, 200
    kw = dict(cells=cells, stream=stream, action=action, **features)
    venv = AllocVectorEnv(num_envs=B, **kw)
    singles = [AllocEnv(**kw) for _ in range(B)]
    vobs, vinfo = venv.reset(seed=seed)
    sobs, sinfo = zip(*[s.reset(seed=seed + b) for b, s in enumerate(singles)], strict=True)
    sobs, sinfo = list(sobs), list(sinfo)
    for b in range(B):
        np.testing.assert_array_equal(vobs[b], sobs[b])
        assert vinfo["request"][b] == sinfo[b]["request"]
    rng = np.random.default_rng(1)
    n_actions = venv.single_action_space.n
    ends = 0
    returns = np.zeros(B)
    for t in range(T):
        if action == "heuristic":
            acts = rng.integers(0, n_actions, B)
        else:
            masks = venv.action_masks()
            for b in range(B):
                np.testing.assert_array_equal(masks[b], sinfo[b]["action_mask"])
                np.testing.assert_array_equal(vinfo["action_mask"][b], sinfo[b]["action_mask"])
            # mostly valid actions, sometimes an arbitrary (maybe invalid) one
            acts = np.array([masked_choice(masks[b], rng) if rng.random() < 0.85 else rng.integers(n_actions)
                             for b in range(B)])
        vobs, vr, vterm, vtrunc, vinfo = venv.step(acts)
        assert vobs.dtype == np.float32 and vr.shape == (B,)
        for b in range(B):
            o, r, term, trunc, info = singles[b].step(int(acts[b]))
            returns[b] += r
            assert r == vr[b] and term == vterm[b] and trunc == vtrunc[b], (t, b)
            # SAME_STEP: a finished heap's step info is under final_info, its new episode's in info
            step_info = vinfo["final_info"] if (term or trunc) else vinfo
            for k in ("allocations", "free_cells", "largest_free", "free_runs", "request"):
                assert info[k] == step_info[k][b], (t, b, k)
            if term or trunc:
                ends += 1
                assert vinfo["_final_obs"][b] and vinfo["_episode"][b] and vinfo["_final_info"][b]
                np.testing.assert_array_equal(vinfo["final_obs"][b], o)
                assert vinfo["episode"]["r"][b] == pytest.approx(info["episode"]["r"])
                assert vinfo["episode"]["l"][b] == info["episode"]["l"]
                assert info["episode"]["r"] == pytest.approx(returns[b], abs=1e-6)
                returns[b] = 0.0
                o, info = singles[b].reset()  # no seed: the next episode of the same seed
            else:
                if "_final_obs" in vinfo:
                    assert not vinfo["_final_obs"][b] and not vinfo["_episode"][b]
            np.testing.assert_array_equal(vobs[b], o, err_msg=f"t={t} b={b}")
            sobs[b], sinfo[b] = o, info
            if term or trunc:  # the new episode's info matches the single env's reset info
                for k in ("allocations", "free_cells", "largest_free", "free_runs", "request"):
                    assert info[k] == vinfo[k][b], (t, b, k)
    assert ends >= 3  # autoresets were exercised


def test_vector_autoreset_obs_is_first_obs_of_next_episode():
    venv = AllocVectorEnv(num_envs=3, cells=32, stream="random", history=2)
    venv.reset(seed=0)
    seen = 0
    for _ in range(200):
        obs, r, term, trunc, info = venv.step(np.full(3, 2))
        done = term | trunc
        if done.any():
            for b in np.flatnonzero(done):
                seen += 1
                assert not obs[b, :32].any()  # a new episode starts on an empty heap
                assert (obs[b, 33:] == -1).all()  # with empty history
                assert info["final_obs"][b, :32].any()  # the final obs is a full-ish heap
                assert info["final_obs"][b, 32] > info["final_info"]["largest_free"][b]
                assert info["largest_free"][b] == 32 and info["request"][b] == obs[b, 32]
            for b in np.flatnonzero(~done):
                assert not info["_final_obs"][b] and not info["_episode"][b]
    assert seen >= 3


def test_vector_seed_list_wrong_length_raises_value_error():
    venv = AllocVectorEnv(num_envs=3, cells=32)
    for seeds in ([1, 2], [1, 2, 3, 4]):
        with pytest.raises(ValueError, match="seed"):
            venv.reset(seed=seeds)


def test_core_state_dict_round_trip():
    env = AllocEnv(cells=32, stream="random", history=2, summary=True)
    env.reset(seed=5)
    for _ in range(4):
        env.step(0)
    state = env.core.state_dict()
    acts = [2, 1, 0, 2, 2, 1, 0, 0]

    def go():
        out = []
        for a in acts:
            obs, r, term, trunc, _ = env.step(a)
            out += [obs, r, term, trunc]
            if term or trunc:
                break
        return out

    first = go()
    env.core.load_state_dict(state)
    assert traj_equal(go(), first)


def test_vector_seed_list_and_reseed():
    v1 = AllocVectorEnv(num_envs=3, cells=32)
    v2 = AllocVectorEnv(num_envs=3, cells=32)
    o1, _ = v1.reset(seed=10)
    o2, _ = v2.reset(seed=[10, 11, 12])
    np.testing.assert_array_equal(o1, o2)
    acts = np.random.default_rng(0).integers(0, 3, (100, 3))
    for a in acts:
        x1 = v1.step(a)
        x2 = v2.step(a)
        for p, q in zip(x1[:4], x2[:4], strict=True):
            np.testing.assert_array_equal(p, q)
    # reseeding restarts the same episodes
    o3, _ = v1.reset(seed=10)
    np.testing.assert_array_equal(o1, o3)


# --------------------------------------------------------------------------------------------------
# the ideal (compacting) heap is an upper bound
# --------------------------------------------------------------------------------------------------
def first_episode_returns(stream, ideal, action, B=50, cells=128, seed=1000):
    venv = AllocVectorEnv(num_envs=B, cells=cells, stream=stream, ideal=ideal)
    venv.reset(seed=seed)
    done = np.zeros(B, bool)
    ret, length = np.zeros(B), np.zeros(B, int)
    for _ in range(10 * cells):
        obs, r, term, trunc, info = venv.step(np.full(B, action))
        if "_episode" in info:
            new = info["_episode"] & ~done
            ret[new] = info["episode"]["r"][new]
            length[new] = info["episode"]["l"][new]
            done |= info["_episode"]
        if done.all():
            return ret, length
    raise AssertionError("episodes did not end")


@pytest.mark.parametrize("stream", ["random", "mixed"])
def test_ideal_bounds_every_heuristic(stream):
    ideal_r, ideal_l = first_episode_returns(stream, True, 0)
    means = {}
    for action in (0, 1, 2):
        r, length = first_episode_returns(stream, False, action)
        assert (ideal_r >= r - 1e-6).all(), (action, np.flatnonzero(ideal_r < r - 1e-6))
        assert (ideal_l >= length).all()
        means[action] = r.mean()
    assert ideal_r.mean() >= max(means.values())
    if stream == "mixed":
        assert ideal_r.mean() > means[0] + 5  # the adversarial parts cost every heuristic a lot


def test_ideal_terminates_only_when_total_free_too_small():
    env = AllocEnv(cells=64, stream="mixed", ideal=True)
    for seed in range(4):
        rewards, infos, _, term, trunc = run_episode(env, const(2), seed=seed)
        last = infos[-1]
        assert term != trunc
        if term:
            assert last["free_cells"] < last["request"]
        assert all(i["free_cells"] >= i["request"] for i in infos[:-1])


@pytest.mark.parametrize("action", ["address", "hole"])
def test_ideal_mode_masks_are_consistent(action):
    """With ideal=True and a masked action space, either the config is rejected, or while the episode runs
    the mask offers at least one action and a masked-random policy never gets the invalid reward.

    (Compaction happens inside step() when the largest run is too small; the mask and bitmap handed to the
    agent must describe the heap it will act on.)"""
    try:
        env = AllocEnv(cells=32, stream="random", action=action, ideal=True)
    except ValueError:
        return
    rng = np.random.default_rng(0)
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        while True:
            m = info["action_mask"]
            assert bool(m.any()), (f"empty action mask in a running episode (seed {seed}, request "
                                   f"{info['request']}, free {info['free_cells']}, largest run {info['largest_free']})")
            obs, r, term, trunc, info = env.step(masked_choice(m, rng))
            assert r != INVALID_R
            if term or trunc:
                break


# --------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"action": "addr"}, "unknown action space"),
    ({"heuristics": ("best", "fastest")}, "unknown placement heuristic"),
    ({"heuristics": ()}, "heuristic"),
    ({"stream": "nope"}, "unknown request stream"),
    ({"cell": 256}, "unknown allocation env option"),
    ({"cells": 1}, "cells"),
    ({"cells": 0}, "cells"),
    ({"cells": 32.5}, "cells"),
    ({"size_scale": "log"}, "size_scale"),
    ({"terminal_reward": "big"}, "terminal_reward"),
    ({"align": "middle"}, "align"),
    ({"action": "hole", "hole_order": "largest"}, "unknown hole_order 'largest'"),
    ({"history": -1}, "history"),
    ({"action": "hole", "holes": 0}, "holes"),
    ({"max_allocs": 0}, "max_allocs"),
    ({"stream": "random", "stream_params": {"free_prob": 1.5}}, "free_prob"),
    ({"stream": "random", "stream_params": {"freeprob": 0.1}}, "freeprob"),
    ({"stream": "bf-good", "cells": 8}, "at least"),
])
def test_bad_config_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AllocEnv(**kwargs)
    with pytest.raises(ValueError, match=match):
        AllocVectorEnv(num_envs=2, **kwargs)


def test_bad_config_through_gym_make():
    with pytest.raises(ValueError, match="unknown allocation env option"):
        gym.make(ALLOC_ID, cell=256)
    with pytest.raises(ValueError, match="unknown allocation env option"):
        gym.make_vec(ALLOC_ID, num_envs=2, vectorization_mode="vector_entry_point", cell=256)


def test_bad_render_mode_and_num_envs():
    with pytest.raises(ValueError, match="render_mode"):
        AllocEnv(render_mode="human")
    with pytest.raises(ValueError, match="num_envs"):
        AllocVectorEnv(num_envs=0)


@pytest.mark.parametrize("action_space,bad,match", [
    ("heuristic", 3, "out of range"),
    ("heuristic", -1, "out of range"),
    ("heuristic", 1.5, "integer"),
    ("heuristic", np.float32(0.25), "integer"),
    ("heuristic", float("nan"), "integer"),
    ("address", 32, "out of range"),
    ("hole", 8, "out of range"),
    ("heuristic", [0, 1], "action"),
])
def test_bad_action_raises_and_changes_nothing(action_space, bad, match):
    env = AllocEnv(cells=32, action=action_space)
    ref = AllocEnv(cells=32, action=action_space)
    obs, info = env.reset(seed=3)
    ref.reset(seed=3)
    with pytest.raises(ValueError, match=match):
        env.step(bad)
    # nothing changed: the env continues exactly like an untouched one
    for _ in range(5):
        a = int(np.flatnonzero(env.action_masks())[0])
        x, y = env.step(a), ref.step(a)
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:4] == y[1:4]
        assert x[4]["allocations"] == y[4]["allocations"]
        if x[2] or x[3]:
            assert x[4]["episode"] == y[4]["episode"]
            break


def test_numpy_integer_actions_accepted():
    # floats, even integral ones (2.0), are refused like gymnasium's Discrete.contains: tests/test_misuse.py
    env = AllocEnv(cells=32)
    ref = AllocEnv(cells=32)
    env.reset(seed=0)
    ref.reset(seed=0)
    for a in (np.int64(1), np.array(0), np.array([2]), np.int32(2), np.array([1], dtype=np.uint8)):
        x, y = env.step(a), ref.step(int(np.asarray(a).reshape(-1)[0]))
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1] == y[1]


def test_vector_wrong_number_of_actions():
    venv = AllocVectorEnv(num_envs=4, cells=32)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="expected 4 actions"):
        venv.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="expected 4 actions"):
        venv.step(np.zeros(5, int))
    with pytest.raises(ValueError, match="out of range"):
        venv.step(np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer"):
        venv.step(np.array([0.0, 1.0, 0.5, 2.0]))
    venv.step(np.array([0, 1, 2, 0]))  # still usable


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        AllocEnv(cells=32).step(0)
    with pytest.raises(RuntimeError, match="reset"):
        AllocVectorEnv(num_envs=2, cells=32).step(np.array([0, 0]))


def test_step_after_end_raises_until_reset():
    env = AllocEnv(cells=32)
    run_episode(env, const(2), seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(RuntimeError):
        env.step(1)
    env.reset()
    env.step(0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.tuples(st.integers(0, 39), st.integers(1, 6)), min_size=1, max_size=12),
       size=st.integers(1, 5))
def test_heuristics_match_brute_force(blocks, size):
    """best = smallest fitting run, worst = largest run, first = lowest address; ties to the lowest address;
    the block goes to the start of the run."""
    cells = 40
    env = AllocEnv(cells=cells, stream="random",
                   stream_params={"free_prob": 0.0, "size_min": size, "size_max": size})
    env.reset(seed=0)
    heaps = env.core.heaps
    for addr, sz in blocks:
        heaps.allocate(addr, min(sz, cells - addr), heaps=[0])
    env.core.runs = type(env.core.runs).of(heaps.occ)
    bits = heaps.occ[0].numpy().copy()
    runs = fitting_runs(bits, size)
    if not runs:
        return
    expected = {
        0: min(runs, key=lambda r: (r[1], r[0]))[0],
        1: min(runs, key=lambda r: (-r[1], r[0]))[0],
        2: runs[0][0],
    }
    state = env.core.state_dict()
    for action, addr in expected.items():
        env.core.load_state_dict(state)
        obs, r, term, trunc, info = env.step(action)
        assert r != INVALID_R
        placed = np.flatnonzero(obs[:cells].astype(bool) & ~bits)
        assert placed.tolist() == list(range(addr, addr + size)), action


# --------------------------------------------------------------------------------------------------
# property test: invariants under arbitrary action sequences
# --------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 23), min_size=1, max_size=60),
       action_space=st.sampled_from(["address", "hole"]))
def test_invariants_random_actions(seed, actions, action_space):
    cells = 24
    env = AllocEnv(cells=cells, stream="random", action=action_space, holes=4)
    obs, info = env.reset(seed=seed)
    ret, length = 0.0, 0
    for a in actions:
        a = a % env.action_space.n
        valid = bool(info["action_mask"][a])
        before_obs, before_info = obs, info
        obs, r, term, trunc, info = env.step(a)
        ret += r
        length += 1
        if valid:
            assert r == pytest.approx(0.1) or (term and r in (0.0, np.float32(0.1)))
            assert info["allocations"] == before_info["allocations"] + 1
        else:
            assert r == INVALID_R and not term and not trunc
            np.testing.assert_array_equal(obs, before_obs)
        bits = obs[:cells]
        assert info["free_cells"] == cells - int(bits.sum())
        runs = free_runs(bits)
        assert info["largest_free"] == max([ln for _, ln in runs] + [0])
        np.testing.assert_array_equal(
            info["action_mask"],
            address_mask_ref(bits, int(obs[cells])) if action_space == "address"
            else np.arange(4) < len(fitting_runs(bits, int(obs[cells]))))
        if term or trunc:
            assert info["episode"]["r"] == pytest.approx(ret, abs=1e-6)
            assert info["episode"]["l"] == length
            break
        assert "episode" not in info
