"""The gymnasium faces of any batched core: ``CoreEnv`` (one env, B = 1, no autoreset: gymnasium's ``Env``) and
``CoreVectorEnv`` (the native batched ``VectorEnv``, SAME_STEP autoreset). A family's gymnasium envs subclass them,
build their core and add what is theirs (rendering); the step semantics, action checks and info conversion are
these, the same for every family.

The single env's ``info`` holds each per-row value unbatched (numpy scalars / arrays, nested dicts alike); the
vector env's holds numpy arrays [num_envs, ...] with gymnasium's ``_KEY`` masks.

A core built for one row may offer a fast path: ``reset_one(seed)``, ``step_one(action)`` and ``mask_one()``
that return what ``CoreEnv`` would make of its batched ``reset`` / ``step`` / mask (numpy observation, Python
scalars, unbatched info), without tensors. ``CoreEnv`` uses them where present (the allocation family's
``alloc.fast.FastAllocCore``). Likewise a batched core may offer ``step_numpy(actions)``, returning what
``CoreVectorEnv.step`` would make of its ``step`` (numpy arrays, also inside info); ``CoreVectorEnv`` uses it
where present (``alloc.AllocCore``, whose compiled step builds numpy arrays in the first place).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamalloc.core.actions import ActionSpec


def to_numpy(x):
    """Tensors (also inside dicts) as numpy arrays (CPU tensors share their memory)."""
    if isinstance(x, torch.Tensor):
        try:
            return x.numpy()  # a CPU tensor without grad: the common case, and the cheapest call
        except (TypeError, RuntimeError):  # on a GPU, or requiring grad
            return x.numpy(force=True)
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    return x


def unbatch(info: dict) -> dict:
    """Row 0 of a batched info: scalars as Python numbers, vectors as numpy arrays (no masks, no final obs)."""
    out = {}
    for k, v in info.items():
        if k.startswith("_") or k == "final_obs":
            continue
        if isinstance(v, dict):
            out[k] = unbatch(v)
        elif isinstance(v, torch.Tensor):
            x = v[0].cpu()
            out[k] = x.numpy() if x.ndim else x.item()
        else:
            out[k] = v
    return out


class CoreEnv(gym.Env):
    """One row of ``core`` (built with B = 1 and ``autoreset=False``) as a gymnasium Env with a Box observation
    between ``bounds`` = (low, high) and the core's Discrete action space."""

    def __init__(self, core, bounds: tuple[np.ndarray, np.ndarray], render_mode: str | None = None):
        if render_mode not in (None, *self.metadata.get("render_modes", [])):
            raise ValueError(f"unknown render_mode {render_mode!r}; {type(self).__name__} renders "
                             f"{' or '.join(self.metadata.get('render_modes', [])) or 'nothing'}")
        self.render_mode, self.core = render_mode, core
        self.observation_space = gym.spaces.Box(*bounds, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(core.spec.n_actions)
        spec = core.action_spec
        self._action_spec = ActionSpec(spec.n, None, core.device, "env", spec.space, spec.names)
        self._one = core if callable(getattr(core, "step_one", None)) else None  # the core's one-row fast path

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if self._one is not None:
            return self._one.reset_one(seed)
        obs, info = self.core.reset(None if seed is None else [seed])
        return obs[0].numpy(force=True), unbatch(info)

    def step(self, action):
        if self._one is not None:
            return self._one.step_one(action)
        a = self._action_spec(action)  # one integer (or a one-element array); ActionError names anything else
        obs, r, term, trunc, info = self.core.step(a)
        return obs[0].numpy(force=True), float(r[0]), bool(term[0]), bool(trunc[0]), unbatch(info)

    def action_masks(self) -> np.ndarray:
        """Valid actions now (all True where every action is valid); the sb3-contrib MaskablePPO hook."""
        if self._one is not None:
            m = self._one.mask_one()
            return np.ones(self.action_space.n, bool) if m is None else m
        m = _mask(self.core)
        return np.ones(self.action_space.n, bool) if m is None else m[0].numpy(force=True)


class CoreVectorEnv(VectorEnv):
    """``core`` (B = num_envs rows, SAME_STEP autoreset) as a gymnasium VectorEnv."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, core, bounds: tuple[np.ndarray, np.ndarray]):
        self.core, self.num_envs = core, int(core.B)
        self.single_observation_space = gym.spaces.Box(*bounds, dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(core.spec.n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            first = seed if isinstance(seed, int) else seed[0]
            self._np_random, _ = gym.utils.seeding.np_random(first)
            self.action_space.seed(first)
        obs, info = self.core.reset(seed)
        return obs.numpy(force=True), to_numpy(info)

    def step(self, actions):
        fast = getattr(self.core, "step_numpy", None)  # the core's numpy fast path, where it has one
        if fast is not None:
            return fast(actions)
        obs, reward, term, trunc, info = self.core.step(actions)  # the core checks type, shape and range
        return to_numpy(obs), to_numpy(reward), to_numpy(term), to_numpy(trunc), to_numpy(info)

    def action_masks(self) -> np.ndarray | None:
        m = _mask(self.core)
        return None if m is None else m.numpy(force=True)


def _mask(core) -> torch.Tensor | None:
    """[B, n] valid actions now, from the domain's ``action_mask()`` (None where every action is valid)."""
    get = getattr(core.domain, "action_mask", None)
    if get is not None:
        return get()
    return core.domain.info().get("action_mask") if core.spec.masked else None  # (no observation built)


def check_num_envs(num_envs) -> int:
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return int(num_envs)


__all__ = ["CoreEnv", "CoreVectorEnv", "check_num_envs", "to_numpy", "unbatch"]
