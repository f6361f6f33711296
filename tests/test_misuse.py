"""Env API misuse gets one clear ActionError, never a silent clip; an agent stuck on invalid actions is truncated."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamalloc  # noqa: F401  (registers the envs)
from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.actions import ActionError


@pytest.mark.parametrize("action,match", [
    (None, "None"), ("best", "best"), (1.0, "float"), (True, "bool"), (7, "range|\\[0, 3\\)"), (-1, "range|\\[0, 3\\)"),
])
def test_single_env_refuses_bad_actions(action, match):
    env = gym.make("dreamalloc/Alloc-v0", cells=64, stream="random")
    env.reset(seed=0)
    with pytest.raises(ActionError, match=match):
        env.step(action)
    obs, r, term, trunc, info = env.step(0)  # the env is still usable
    assert obs.shape == env.observation_space.shape


def test_batched_core_refuses_wrong_shape_dtype_and_range():
    core = AllocCore(4, AllocConfig(cells=64, stream="random"))
    core.reset(seed=0)
    with pytest.raises(ActionError, match="shape"):
        core.step(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ActionError, match="float|dtype"):
        core.step(torch.zeros(4))
    with pytest.raises(ActionError):
        core.step(torch.tensor([0, 1, 2, 3]))  # 3 is out of range for three rules
    obs, reward, *_ = core.step(torch.tensor([0, 1, 2, 0]))
    assert obs.shape[0] == 4


def test_step_before_reset_is_a_clear_error():
    core = AllocCore(2, AllocConfig(cells=64, stream="random"))
    with pytest.raises(Exception, match="before reset"):
        core.step(torch.zeros(2, dtype=torch.long))


def test_invalid_addresses_forever_truncate_the_episode():
    cfg = AllocConfig(cells=16, stream="random", action="address", max_invalid=5)
    core = AllocCore(1, cfg)
    for seed in range(50):  # a first request of size > 1: its last start cells do not fit
        obs, info = core.reset(seed=seed)
        mask = info["action_mask"][0]
        if (~mask).any():
            break
    assert (~mask).any()
    bad = int(torch.nonzero(~mask)[0])
    truncated = False
    for _ in range(5):
        obs, reward, term, trunc, info = core.step(torch.tensor([bad]))
        assert float(reward[0]) == cfg.invalid_reward
        truncated = bool(trunc[0])
        mask = info["action_mask"][0]
        if (~mask).any():
            bad = int(torch.nonzero(~mask)[0])
    assert truncated and bool(info["invalid_truncated"][0])


def test_vector_env_refuses_a_2x2_array_for_4_heaps():
    venv = gym.make_vec("dreamalloc/Alloc-v0", num_envs=4, vectorization_mode="vector_entry_point", cells=64,
                        stream="random")
    venv.reset(seed=0)
    with pytest.raises(ActionError, match="shape"):
        venv.step(np.zeros((2, 2), dtype=np.int64))
