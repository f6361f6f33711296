"""Stable-Baselines3 trains on AllocEnv as it is, without adapters (Lim & Maddukuri used SB3 DQN / PPO)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3 import DQN, PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env as sb3_check_env  # noqa: E402

from dreamalloc.envs import AllocEnv  # noqa: E402


@pytest.mark.parametrize("action", ["heuristic", "address", "hole"])
def test_sb3_env_checker(action):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(AllocEnv(cells=32, stream="random", action=action, history=2), warn=False)


def _assert_valid_predictions(model, env, n=20):
    obs, _ = env.reset(seed=0)
    for _ in range(n):
        action, _ = model.predict(obs, deterministic=True)
        a = int(np.asarray(action).reshape(-1)[0])
        assert env.action_space.contains(a)
        obs, r, term, trunc, _ = env.step(a)
        if term or trunc:
            obs, _ = env.reset()


def test_dqn_learns_without_adapters():
    env = AllocEnv(cells=32, stream="random")
    model = DQN("MlpPolicy", env, learning_starts=100, policy_kwargs={"net_arch": [32, 32]}, gamma=1.0,
                seed=0, device="cpu")
    model.learn(1000)
    assert model.num_timesteps == 1000
    _assert_valid_predictions(model, AllocEnv(cells=32, stream="random"))


def test_dqn_address_space_runs():
    env = AllocEnv(cells=32, stream="random", action="address")
    model = DQN("MlpPolicy", env, learning_starts=100, seed=0, device="cpu")
    model.learn(300)
    _assert_valid_predictions(model, AllocEnv(cells=32, stream="random", action="address"))


def test_ppo_learns_without_adapters():
    env = AllocEnv(cells=32, stream="random")
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(256)
    assert model.num_timesteps >= 256
    _assert_valid_predictions(model, AllocEnv(cells=32, stream="random"))
    # predict on a batch of observations too
    obs = np.stack([AllocEnv(cells=32).reset(seed=s)[0] for s in range(4)])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (4,) and ((actions >= 0) & (actions < 3)).all()


def test_ppo_hole_space_with_features():
    kw = dict(cells=32, stream="random", action="hole", holes=4, hole_features=4,
              summary=True)
    model = PPO("MlpPolicy", AllocEnv(**kw), n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    _assert_valid_predictions(model, AllocEnv(**kw))
