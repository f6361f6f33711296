"""``skip_forced``: the env places the requests on which every rule of the action set agrees, so the agent is
asked only where its choice matters. Same placements and returns as without skipping; fewer steps; every
step after an episode's first is a real choice; the rewards of a step add up what its placements earned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamalloc.alloc.env import AllocCore
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.heap.heuristics import place_address
from dreamalloc.core.rollout import run_episodes

pytestmark = pytest.mark.usefixtures("single_thread")

STREAMS = [
    ("random", {}, ("best", "worst", "first")),
    ("mixed", {}, ("best", "worst", "first")),
    ("adversarial", {"target": "worst", "blind": ["best", "worst", "first"], "size_min": 1, "size_max": 1},
     ("best", "worst", "first")),
    ("adversarial", {"target": "next"}, RULES),
]


def state_policy(core: AllocCore):
    """A rule chosen from the heap's state alone (request and cells in use): the same state, the same rule."""
    n = core.cfg.n_actions
    return lambda obs, info: (core.request * 7 + core.heaps.used * 3) % n


@pytest.mark.parametrize("terminal_reward", ["lim", "zero", "alloc"])
@pytest.mark.parametrize("stream, params, rules", STREAMS)
def test_same_returns_fewer_steps(stream, params, rules, terminal_reward):
    kw = dict(cells=64, stream=stream, stream_params=params, heuristics=rules, terminal_reward=terminal_reward,
              max_allocs=60)
    out = {}
    for skip in (False, True):
        core = AllocCore(24, skip_forced=skip, **kw)
        out[skip] = run_episodes(core, state_policy(core), seed=3, k=2)
    for key in ("allocations", "free_cells", "largest_free"):
        assert (out[True][key] == out[False][key]).all(), key
    assert np.allclose(out[True]["return"], out[False]["return"], rtol=0, atol=1e-9)  # sums grouped otherwise
    assert (out[True]["length"] <= out[False]["length"]).all()
    assert out[True]["length"].sum() < out[False]["length"].sum()


@pytest.mark.parametrize("stream, params, rules", STREAMS)
def test_every_later_step_is_a_choice_and_rewards_add_up(stream, params, rules):
    core = AllocCore(16, cells=64, stream=stream, stream_params=params, heuristics=rules, skip_forced=True,
                     max_allocs=60)
    obs, info = core.reset(seed=5)
    policy = state_policy(core)
    ret = torch.zeros(16, dtype=torch.float64)
    checked = 0
    for _ in range(300):
        later = ~info["episode_start"]
        if later.any():  # the rules part on this request: at least two distinct addresses
            addrs = torch.stack([core.addresses(torch.full((16,), i))[0] for i in range(len(rules))])
            distinct = (addrs != addrs[:1]).any(0)
            assert distinct[later].all()
            checked += int(later.sum())
        obs, reward, term, trunc, info = core.step(policy(obs, info))
        ret += reward
        done = term | trunc
        if done.any():
            assert torch.allclose(ret[done], info["episode"]["r"][done])
            ret[done] = 0.0
    assert checked > 100


def test_one_step_can_end_the_episode_and_reports_it():
    """A blind script's tiling is all forced: the first step of an episode runs up to the probe, and the
    wrong rule's death on a test request (forced too) ends the episode inside the probe's step."""
    params = {"target": "best", "blind": ["best", "worst", "first"], "size_min": 1, "size_max": 1}
    core = AllocCore(2, cells=64, stream="adversarial", stream_params=params, skip_forced=True, max_allocs=36)
    core.reset(seed=[11, 11])
    _, r, term, trunc, info = core.step(torch.tensor([0, 0]))  # the tiling's first request: forced up to the probe
    assert not (term | trunc).any() and core.heaps.n_allocs.min() > 10 and torch.allclose(
        r, 0.1 * core.heaps.n_allocs.double())
    _, r, term, trunc, info = core.step(torch.tensor([0, 1]))  # the probe: best survives, worst does not
    assert not bool(term[0]) and bool(term[1])
    assert info["episode"]["r"][1] < 3.0


@pytest.mark.parametrize("action", ["hole", "address"])
def test_hole_and_address_spaces_are_asked_only_where_the_rules_part(action):
    """In the hole / address spaces the env places the requests on which the rules agree (as the rules do) and
    asks the agent where they part, in its own space: every later step is such a request and the rewards add up;
    playing worst fit's address at every decision gives worst fit's steps and returns (in the hole space worst
    fit's hole where it is among the 8 visible ones, the largest visible one where not)."""
    params = {"target": "worst", "blind": ["best", "worst", "first"], "size_min": 1, "size_max": 1}
    kw = dict(cells=256, stream="adversarial", stream_params=params, heuristics=("best", "worst", "first"),
              max_allocs=36, holes=8, hole_order="size")
    core = AllocCore(8, action=action, skip_forced=True, **kw)
    rules = AllocCore(8, action="heuristic", skip_forced=True, **kw)  # worst fit throughout, for the address space
    _, info = core.reset(seed=7)
    rules.reset(seed=7)
    ret, checked, episodes = torch.zeros(8, dtype=torch.float64), 0, 0
    for _ in range(200):
        addrs = torch.stack([place_address(core.runs, core.request, rule, core.heaps.rover) for rule in
                             ("best", "worst", "first")])
        later = ~info["episode_start"]
        assert (addrs != addrs[:1]).any(0)[later].all()
        checked += int(later.sum())
        if action == "address":
            a = addrs[1]
        else:  # worst fit's hole where visible, else the largest visible one (size order: the last one)
            start, length = core.runs.first_fitting(core.request, 8, True)
            at = (start == addrs[1][:, None]) & (length > 0)
            a = torch.where(at.any(1), at.long().argmax(1), (length > 0).sum(1) - 1)
            assert torch.equal(core.addresses(a)[0][at.any(1)], addrs[1][at.any(1)])
        _, r, term, trunc, info = core.step(a)
        if action == "address":
            _, r_r, term_r, trunc_r, _ = rules.step(torch.full((8,), 1))
            assert torch.equal(term | trunc, term_r | trunc_r) and torch.allclose(r, r_r)
        ret += r
        done = term | trunc
        if done.any():
            assert torch.allclose(ret[done], info["episode"]["r"][done])
            ret[done] = 0.0
            episodes += int(done.sum())
    assert checked > 50 and episodes > 20
