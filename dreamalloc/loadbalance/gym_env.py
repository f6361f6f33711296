"""Gymnasium faces of the batched core: ``LoadBalanceEnv`` (one env, B = 1) and ``LoadBalanceVectorEnv``
(the native batched VectorEnv, SAME_STEP autoreset like ``envs.vector.AllocVectorEnv``).

Observation: Box(float32) [per-server load (S), incoming job size, (meta obs), (task one-hot)]; action:
Discrete(S), the server. ``info`` has ``loads`` (as observed, ``load_obs``), ``work`` (true outstanding work),
``queue`` (jobs per server), ``time``, ``mean_job_time`` (so far; the episode's at its end) and ``episode``
{r, l} where an episode ended. Actions are checked as in ``core.actions`` (one int for the single env, an
integer array of shape (num_envs,) for the vector env).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamalloc.alloc.gym_env import _unbatch
from dreamalloc.alloc.vector import _to_numpy
from dreamalloc.core.actions import ActionSpec
from dreamalloc.loadbalance.config import LoadBalanceConfig
from dreamalloc.loadbalance.env import LoadBalanceCore


class LoadBalanceEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None, device: str = "cpu", **kwargs):
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unknown render_mode {render_mode!r}; LoadBalanceEnv renders ansi")
        self.render_mode = render_mode
        self.core = LoadBalanceCore(1, LoadBalanceConfig.from_kwargs(**kwargs), device=device, autoreset=False)
        lo, hi = self.core.cfg.obs_bounds()
        self.observation_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.core.cfg.n_actions)
        spec = self.core.action_spec
        self._action_spec = ActionSpec(spec.n, None, self.core.device, "env", spec.space)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        obs, info = self.core.reset(None if seed is None else [seed])
        return obs[0].numpy(force=True), _unbatch(info)

    def step(self, action):
        obs, r, term, trunc, info = self.core.step(self._action_spec(action))  # ActionError if not one int
        return obs[0].numpy(force=True), float(r[0]), bool(term[0]), bool(trunc[0]), _unbatch(info)

    def render(self):
        _, queue, work = self.core.loads()  # [jobs:outstanding work] per server
        return (f"t={int(self.core.now[0])} job={int(self.core.incoming()[0])} "
                + " ".join(f"[{int(q)}:{int(w)}]" for q, w in zip(queue[0], work[0], strict=True)))


class LoadBalanceVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 8, device: str = "cpu", **kwargs):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.core = LoadBalanceCore(int(num_envs), LoadBalanceConfig.from_kwargs(**kwargs), device=device)
        self.num_envs = int(num_envs)
        lo, hi = self.core.cfg.obs_bounds()
        self.single_observation_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(self.core.cfg.n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            first = seed if isinstance(seed, int) else seed[0]
            self._np_random, _ = gym.utils.seeding.np_random(first)
            self.action_space.seed(first)
        obs, info = self.core.reset(seed)
        return obs.numpy(force=True), _to_numpy(info)

    def step(self, actions):
        obs, reward, term, trunc, info = self.core.step(actions)  # the core checks type, shape and range
        return (obs.numpy(force=True), reward.numpy(force=True), term.numpy(force=True), trunc.numpy(force=True),
                _to_numpy(info))
