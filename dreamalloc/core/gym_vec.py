"""Any gymnasium vector env behind the batched core's tensor interface (``core.driver`` trains agents on it).

Agents are written against ``AllocCore`` (tensors in, tensors out, SAME_STEP autoreset with ``final_obs``
and ``episode`` in info). ``GymVecCore`` gives e.g. CartPole-v1 that same face, so the baselines can be
checked on standard tasks and against Stable-Baselines3 with exactly the code that runs on allocation.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from dreamalloc.core.actions import ActionError, ActionSpec


def _tensor(x, device):
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(x)
        if t.dtype == torch.float64 and x.ndim > 1:
            t = t.float()
        return t.to(device)
    if isinstance(x, dict):
        return {k: _tensor(v, device) for k, v in x.items()}
    return x


class GymVecCore:
    """``num_envs`` copies of a registered gymnasium env (sync vectorised), as torch tensors on ``device``."""

    def __init__(self, env_id: str, num_envs: int, device="cpu", **make_kwargs):
        self.device = torch.device(device)
        env = gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="sync",
                           vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **make_kwargs)
        self.env = gym.wrappers.vector.RecordEpisodeStatistics(env)
        self.B = int(num_envs)
        space = self.env.single_action_space
        self.obs_dim = int(np.prod(self.env.single_observation_space.shape))
        if isinstance(space, gym.spaces.Discrete):
            self.n_actions: int | tuple[int, ...] = int(space.n)
        elif isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
            self.n_actions = tuple(int(n) for n in space.nvec)  # agents that take it act with [B, D] integers
        else:
            raise ValueError(f"{env_id}: only Discrete and (flat) MultiDiscrete action spaces are supported, got "
                             f"{space}")
        multi = not isinstance(self.n_actions, int)
        nvec = self.n_actions if multi else (self.n_actions,)
        self._shape = (self.B, len(nvec)) if multi else (self.B,)
        self._nvec = torch.tensor(nvec, dtype=torch.long, device=self.device)
        # MultiDiscrete [B, D]: checked flattened against the largest n, then per dimension
        self._spec = ActionSpec(max(nvec), self.B * len(nvec) if multi else self.B, self.device, "env",
                                f"{env_id}'s {space}")

    def check_action(self, action) -> torch.Tensor:
        """Actions as int64 [B] (Discrete) or [B, D] (MultiDiscrete) on ``device``; an ``ActionError`` naming
        the problem for a wrong type, dtype, shape or value (never passed on to the env to fail inside it)."""
        if isinstance(self.n_actions, int):
            return self._spec(action)
        if isinstance(action, list | tuple):
            try:
                action = np.asarray(action)
            except ValueError:
                raise self._spec.fail(action, "a ragged list is not an action array") from None
        shape = self._shape
        if not isinstance(action, torch.Tensor | np.ndarray) or tuple(action.shape) != shape:
            got = tuple(action.shape) if isinstance(action, torch.Tensor | np.ndarray) else type(action).__name__
            raise ActionError(f"invalid action: expected an integer tensor or array of shape {shape} (one action "
                              f"per env and dimension of {self.n_actions}), got {got}")
        a = self._spec(action.reshape(-1)).view(shape)
        over = a >= self._nvec
        if bool(over.any()):
            d = int(over.nonzero()[0, 1])
            raise ActionError(f"invalid action: dimension {d} takes values in [0, {int(self._nvec[d]) - 1}], got "
                              f"{int(a[:, d].max())}; expected an integer tensor or array of shape {shape}")
        return a

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        return _tensor(obs.reshape(self.B, -1).astype(np.float32), self.device), _tensor(info, self.device)

    def step(self, action: torch.Tensor):
        obs, r, term, trunc, info = self.env.step(self.check_action(action).cpu().numpy())
        info = dict(info)
        if "final_obs" in info:
            done = info["_final_obs"]
            dense = obs.copy()
            dense[done] = np.stack([info["final_obs"][i] for i in np.flatnonzero(done)])
            info["final_obs"] = dense.reshape(self.B, -1).astype(np.float32)
            info.pop("final_info", None)
            info.pop("_final_info", None)
        if "episode" in info:
            info["episode"] = {"r": info["episode"]["r"].astype(np.float64), "l": info["episode"]["l"]}
        return (_tensor(obs.reshape(self.B, -1).astype(np.float32), self.device),
                torch.as_tensor(r, dtype=torch.float64, device=self.device),
                torch.as_tensor(term, device=self.device), torch.as_tensor(trunc, device=self.device),
                _tensor(info, self.device))

    def close(self) -> None:
        self.env.close()


__all__ = ["GymVecCore"]
