"""Gymnasium faces of the batched game: ``MallocGameEnv`` (one env, B = 1) and ``MallocGameVectorEnv`` (the
native batched VectorEnv, SAME_STEP autoreset like the other families').

Observation: Box(float32) [the game's features (see ``env.py``), (meta obs), (task one-hot)]; action:
Discrete(K + 1): a feasible gap, or K = slow memory; ``info["action_mask"]`` says which are valid. ``info``
also has ``gap_bottom`` / ``gap_length`` of the K gap slots, ``fast_benefit`` and ``benefit_fraction`` (so
far; the episode's at its end) and ``episode`` {r, l} where an episode ended.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamalloc.core.actions import ActionSpec
from dreamalloc.mallocgame.config import MallocGameConfig
from dreamalloc.mallocgame.env import MallocGameCore


def _numpy(x):
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    if isinstance(x, dict):
        return {k: _numpy(v) for k, v in x.items()}
    return x


def _row0(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        if k.startswith("_") or k == "final_obs":
            continue
        if isinstance(v, dict):
            out[k] = _row0(v)
        elif isinstance(v, torch.Tensor):
            x = v[0].cpu()
            out[k] = x.numpy() if x.ndim else x.item()
        else:
            out[k] = v
    return out


def _spaces(core: MallocGameCore) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """The game's features in [0, obs_high]; then the previous action (one-hot), reward (in [0, 1] when
    normalised, else [0, the largest benefit]) and episode-start flag (meta_obs); then the task one-hot."""
    d, n = core.domain, core.spec.n_actions
    lo, hi = [0.0] * d.obs_dim, d.obs_high.tolist()
    if core.meta_obs:
        r_hi = 1.0 if d.cfg.normalize_reward else float(max(d.P_benefit.max(), 1.0)) if not any(
            t["stream"] == "synthetic" for t in d.cfg.tasks) else float(np.finfo(np.float32).max)
        lo += [0.0] * (n + 2)
        hi += [1.0] * n + [r_hi, 1.0]
    if core.task_obs:
        lo += [0.0] * d.n_tasks
        hi += [1.0] * d.n_tasks
    box = gym.spaces.Box(np.asarray(lo, np.float32), np.asarray(hi, np.float32), dtype=np.float32)
    return box, gym.spaces.Discrete(n)


class MallocGameEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None, device: str = "cpu", **kwargs):
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unknown render_mode {render_mode!r}; MallocGameEnv renders ansi")
        self.render_mode = render_mode
        self.core = MallocGameCore(1, MallocGameConfig.from_kwargs(**kwargs), device=device, autoreset=False)
        self.observation_space, self.action_space = _spaces(self.core)
        spec = self.core.action_spec
        self._action_spec = ActionSpec(spec.n, None, self.core.device, "env", spec.space, spec.names)

    def action_masks(self) -> np.ndarray:
        return self.core.info()["action_mask"][0].cpu().numpy()

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        obs, info = self.core.reset(None if seed is None else [seed])
        return obs[0].numpy(force=True), _row0(info)

    def step(self, action):
        obs, r, term, trunc, info = self.core.step(self._action_spec(action))  # ActionError if not one int
        return obs[0].numpy(force=True), float(r[0]), bool(term[0]), bool(trunc[0]), _row0(info)

    def render(self):
        d = self.core.domain
        b, ln, ok = d.gaps()
        gaps = " ".join(f"[{int(x)}+{int(n)}]" for x, n, v in zip(b[0], ln[0], ok[0], strict=True) if v)
        k = int(d.k[0])
        return (f"buffer {k}/{int(d.n[0])} size={int(d.size[0, min(k, d.N - 1)])} capacity={int(d.cap[0])} "
                f"gaps {gaps or '-'} fast_benefit={float(d.got[0]):.6g}")


class MallocGameVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 8, device: str = "cpu", **kwargs):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.core = MallocGameCore(int(num_envs), MallocGameConfig.from_kwargs(**kwargs), device=device)
        self.num_envs = int(num_envs)
        self.single_observation_space, self.single_action_space = _spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            first = seed if isinstance(seed, int) else seed[0]
            self._np_random, _ = gym.utils.seeding.np_random(first)
            self.action_space.seed(first)
        obs, info = self.core.reset(seed)
        return obs.numpy(force=True), _numpy(info)

    def step(self, actions):
        obs, reward, term, trunc, info = self.core.step(actions)  # the core checks type, shape and range
        return (obs.numpy(force=True), reward.numpy(force=True), term.numpy(force=True), trunc.numpy(force=True),
                _numpy(info))
