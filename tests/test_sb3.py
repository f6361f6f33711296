"""Stable-Baselines3 trains on AllocEnv as it is, and on the batched env through dreamalloc.core.sb3."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3 import DQN, PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env as sb3_check_env  # noqa: E402

from dreamalloc.alloc import AllocEnv  # noqa: E402


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


# --- the native batched env behind SB3's VecEnv (dreamalloc/core/sb3.py) ----------------------------------
def test_sb3_vecenv_adapter_matches_the_vector_env():
    from stable_baselines3.common.vec_env import VecEnv

    from dreamalloc.alloc import AllocVectorEnv
    from dreamalloc.alloc.vector import make_alloc_vecenv

    kw = dict(cells=32, stream="random")
    venv, ref = make_alloc_vecenv(4, **kw), AllocVectorEnv(4, **kw)
    assert isinstance(venv, VecEnv) and venv.num_envs == 4
    venv.seed(3)
    obs, (ref_obs, _) = venv.reset(), ref.reset(seed=3)
    np.testing.assert_array_equal(obs, ref_obs)
    ended = 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 3, size=4)
        obs, r, done, infos = venv.step(a)
        ref_obs, ref_r, term, trunc, info = ref.step(a)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(r, ref_r.astype(np.float32))
        np.testing.assert_array_equal(done, term | trunc)
        for i in np.flatnonzero(done):  # what SB3 bootstraps from and its Monitor-style episode stats
            np.testing.assert_array_equal(infos[i]["terminal_observation"], info["final_obs"][i])
            assert infos[i]["episode"]["r"] == pytest.approx(float(info["episode"]["r"][i]))
            ended += 1
        assert all(infos[i] == {} for i in np.flatnonzero(~done))
    assert ended > 0
    addr = make_alloc_vecenv(2, cells=32, stream="random", action="address")
    addr.reset()
    masks = addr.env_method("action_masks")  # one row per env, as MaskablePPO asks for them
    assert len(masks) == 2 and masks[0].shape == (32,) and masks[0].dtype == bool and masks[0].any()


def test_sb3_ppo_trains_on_the_adapter():
    from dreamalloc.alloc.env import AllocConfig
    from dreamalloc.alloc.vector import make_alloc_vecenv

    venv = make_alloc_vecenv(4, AllocConfig(cells=32, stream="random").validate())
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    assert model.num_timesteps >= 256
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (4,)


def test_sb3_adapter_rejects_config_and_keywords_together():
    from dreamalloc.alloc.env import AllocConfig
    from dreamalloc.alloc.vector import make_alloc_vecenv
    from dreamalloc.core.sb3 import SB3VecEnv

    with pytest.raises(ValueError, match="either an AllocConfig or"):
        make_alloc_vecenv(2, AllocConfig(cells=32), cells=64)
    with pytest.raises(TypeError, match="VectorEnv"):
        SB3VecEnv(object())
