"""Meta-RL trials on the allocation env: flags, the RL^2 observation, one task per trial."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.vector import AllocVectorEnv

TASKS = [{"name": "small", "stream": "random", "params": {"size_max": 2}},
         {"name": "big", "stream": "random", "params": {"size_min": 5, "size_max": 9}}]
K = 3


def play(B=6, seed=0, episodes=7, cells=32, **kw):
    """Random heuristic actions until every heap has finished ``episodes`` episodes; one record per step."""
    core = AllocCore(B, cells=cells, stream="tasks", stream_params={"tasks": TASKS}, trial_episodes=K,
                     meta_obs=True, **kw)
    obs, info = core.reset(seed=seed)
    g = torch.Generator().manual_seed(seed)
    recs, ends = [], torch.zeros(B, dtype=torch.long)
    while bool((ends < episodes).any()):
        a = torch.randint(0, core.cfg.n_actions, (B,), generator=g)
        ep_before = core.episode.clone()
        nobs, r, term, trunc, ninfo = core.step(a)
        recs.append(dict(obs=obs, info=info, a=a, r=r, done=term | trunc, next_obs=nobs, next_info=ninfo,
                         ep=ep_before))
        ends += (term | trunc).long()
        obs, info = nobs, ninfo
    return core, recs


def meta_part(core, obs):
    k = core.cfg.n_actions
    i = core.cfg.obs_dim - (k + 2)
    return obs[:, i: i + k], obs[:, i + k], obs[:, i + k + 1]


def test_trial_flags_follow_each_heaps_episode_count():
    core, recs = play()
    assert bool(recs[0]["info"]["trial_start"].all()) and bool(recs[0]["info"]["episode_start"].all())
    for rec in recs:
        done, ep = rec["done"], rec["ep"]
        closes = done & (ep % K == K - 1)
        assert torch.equal(rec["next_info"]["trial_end"], closes)
        assert torch.equal(rec["next_info"]["trial_start"], closes)  # the next trial's first obs
        assert torch.equal(rec["next_info"]["episode_start"], done)
    # heaps run out of step with each other: trial ends do not all fall on the same step
    end_steps = [tuple(r["next_info"]["trial_end"].nonzero().squeeze(1).tolist()) for r in recs]
    assert len({s for s in end_steps if s}) > 2


def test_meta_observation_holds_previous_action_reward_and_flag():
    core, recs = play()
    for i, rec in enumerate(recs):
        onehot, prev_r, flag = meta_part(core, rec["next_obs"])
        cont = ~rec["next_info"]["trial_start"]
        want = torch.nn.functional.one_hot(rec["a"], core.cfg.n_actions).float()
        assert torch.equal(onehot[cont], want[cont])  # kept across episode ends inside a trial
        assert torch.allclose(prev_r[cont], rec["r"][cont].float())
        assert torch.equal(flag, rec["done"].float())
        new = rec["next_info"]["trial_start"]
        assert float(onehot[new].abs().sum()) == 0 and float(prev_r[new].abs().sum()) == 0
        if i == 0:
            o, r0, f = meta_part(core, rec["obs"])
            assert float(o.abs().sum()) == 0 and float(r0.abs().sum()) == 0 and bool((f == 1).all())
        # the final obs of an ended episode shows the step that ended it
        if "final_obs" in rec["next_info"]:
            d = rec["done"]
            fo, fr, ff = meta_part(core, rec["next_info"]["final_obs"])
            assert torch.equal(fo[d], want[d]) and bool((ff[d] == 0).all())


def test_a_task_is_kept_for_a_whole_trial_and_redrawn_between_trials():
    B = 64
    core = AllocCore(B, cells=32, stream="tasks", stream_params={"tasks": TASKS}, trial_episodes=K)
    _, info = core.reset(seed=3)
    task = {}  # (heap, trial) -> task ids seen
    a = torch.zeros(B, dtype=torch.long)
    while int(core.episode.min()) < 3 * K:
        ep = core.episode.clone()
        for b in range(B):
            task.setdefault((b, int(ep[b]) // K), set()).add(int(info["task_id"][b]))
        _, _, _, _, info = core.step(a)
    assert all(len(v) == 1 for v in task.values())
    per_heap = [{task[(b, t)].pop() for t in range(3)} for b in range(B)]
    assert sum(len(s) > 1 for s in per_heap) > B // 4  # tasks change between trials


def test_heap_of_a_batch_replays_a_single_env():
    _, a = play(B=4, seed=9, episodes=4)
    _, b = play(B=1, seed=9 + 2, episodes=4)
    # same random actions only for row 0 of each generator, so compare the stream: the first obs
    assert torch.equal(a[0]["obs"][2], b[0]["obs"][0])


def test_task_obs_is_an_oracle_only_on_request():
    core = AllocCore(5, cells=32, stream="tasks", stream_params={"tasks": TASKS}, task_obs=True)
    obs, info = core.reset(seed=0)
    assert core.cfg.obs_dim == 32 + 1 + 2
    assert torch.equal(obs[:, -2:].argmax(1), info["task_id"])
    plain = AllocCore(5, cells=32, stream="tasks", stream_params={"tasks": TASKS})
    assert plain.cfg.obs_dim == 33 and "task_id" in plain.reset(seed=0)[1]
    with pytest.raises(ValueError, match="task_obs needs a stream with several tasks"):
        AllocCore(2, cells=32, stream="random", task_obs=True)
    with pytest.raises(ValueError, match="trial_episodes must be an integer >= 1"):
        AllocCore(2, cells=32, trial_episodes=0)


def test_state_dict_restores_the_trial_position():
    core, _ = play(B=3, seed=1, episodes=2)
    twin = AllocCore(3, cells=32, stream="tasks", stream_params={"tasks": TASKS}, trial_episodes=K,
                     meta_obs=True)
    twin.load_state_dict(core.state_dict())
    a = torch.ones(3, dtype=torch.long)
    for _ in range(100):
        o1, _, _, _, i1 = core.step(a)
        o2, _, _, _, i2 = twin.step(a)
        assert torch.equal(o1, o2) and torch.equal(i1["trial_start"], i2["trial_start"])


def test_native_vector_env_with_trials():
    env = AllocVectorEnv(4, cells=32, stream="tasks", stream_params={"tasks": TASKS}, trial_episodes=2,
                         meta_obs=True)
    assert env.single_observation_space.shape == (32 + 1 + 3 + 2,)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["trial_start"].all()
    starts = 0
    for _ in range(300):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        starts += int(info["trial_start"].sum())
        assert np.array_equal(info["trial_end"], info["trial_start"])
    assert starts > 0
    single = gym.make("dreamalloc/Alloc-v0", cells=32, trial_episodes=2, meta_obs=True)
    o, _ = single.reset(seed=0)
    assert single.observation_space.contains(o)
