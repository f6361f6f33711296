"""``AllocVectorEnv``: a native gymnasium VectorEnv over the batched core (not copies of a single env).

Autoreset is SAME_STEP: a heap whose episode ends returns the first observation (and info) of its next
episode; the finished step's observation and info are in ``info["final_obs"]`` (a dense [B, D] array) and
``info["final_info"]``, rows valid where ``_final_obs`` / ``_final_info``. Per-heap metrics are in ``info``
at every step; ``info["episode"]`` = {"r", "l"} where ``_episode``. ``step`` takes an integer array (or
tensor) of shape (num_envs,); any other type, dtype, shape or an out-of-range value is an ``ActionError``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamalloc.alloc.env import AllocConfig, AllocCore


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    return x


class AllocVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 8, device: str = "cpu", **kwargs):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.core = AllocCore(int(num_envs), AllocConfig.from_kwargs(**kwargs), device=device)
        self.num_envs = int(num_envs)
        cfg = self.core.cfg
        lo, hi = cfg.obs_bounds()
        self.single_observation_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(cfg.n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._np_random, _ = gym.utils.seeding.np_random(seed if isinstance(seed, int) else seed[0])
            self.action_space.seed(seed if isinstance(seed, int) else seed[0])
        obs, info = self.core.reset(seed)
        return obs.cpu().numpy(), _to_numpy(info)

    def step(self, actions):
        obs, reward, term, trunc, info = self.core.step(actions)  # the core checks type, shape and range
        return (obs.cpu().numpy(), reward.cpu().numpy(), term.cpu().numpy(), trunc.cpu().numpy(),
                _to_numpy(info))

    def action_masks(self) -> np.ndarray | None:
        m = self.core.action_mask()
        return None if m is None else m.cpu().numpy()

