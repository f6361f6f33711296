"""The native batched envs behind Stable-Baselines3's ``VecEnv`` API, so SB3 trains on one batched core.

SB3 does not take a gymnasium ``VectorEnv``; ``make_vec_env`` would step B single-heap envs one after
another in a ``DummyVecEnv``. ``SB3VecEnv(AllocVectorEnv(...))`` (or ``make_alloc_vecenv``) keeps the batch:

    from stable_baselines3 import PPO
    from dreamalloc.alloc.vector import make_alloc_vecenv
    model = PPO("MlpPolicy", make_alloc_vecenv(16, cells=256, stream="mixed"), device="cpu").learn(10_000)

It works over any vector env of this package with same-step autoreset (``AllocVectorEnv``,
``LoadBalanceVectorEnv``): done = terminated | truncated, and a finished env's info carries
``terminal_observation`` (the pre-reset observation), ``TimeLimit.truncated`` and ``episode`` (``r``, ``l``),
as SB3's callbacks and bootstrapping expect. ``env_method("action_masks")`` gives one mask per env
(what sb3-contrib's MaskablePPO asks for).

stable_baselines3 is imported when an adapter is made, not when this module is: the package does not
depend on it (``pip install stable-baselines3``, or the ``dev`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_CLASS: type | None = None


def _vec_env_base() -> type:
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError as e:  # one clear message instead of a bare ModuleNotFoundError
        raise ImportError("dreamalloc.core.sb3 needs stable-baselines3: pip install stable-baselines3 "
                          "(or the package's dev extra)") from e
    return VecEnv


def _adapter_class() -> type:
    """The VecEnv subclass, built on first use (its base class lives in stable_baselines3)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    VecEnv = _vec_env_base()

    class _SB3VecEnv(VecEnv):
        __doc__ = SB3VecEnv.__doc__

        def __init__(self, venv):
            for attr in ("num_envs", "single_observation_space", "single_action_space", "step", "reset"):
                if not hasattr(venv, attr):
                    raise TypeError(f"SB3VecEnv wraps a gymnasium VectorEnv of this package (AllocVectorEnv, "
                                    f"LoadBalanceVectorEnv); {type(venv).__name__} has no {attr!r}")
            self.venv = venv
            super().__init__(int(venv.num_envs), venv.single_observation_space, venv.single_action_space)
            self._actions = None

        def reset(self):
            seed = self._seeds[0]  # SB3's seed(s) sets one seed per env; the batched core takes the first
            obs, _ = self.venv.reset(seed=seed)
            self._reset_seeds()
            return obs

        def step_async(self, actions):
            self._actions = np.asarray(actions).reshape(self.num_envs)

        def step_wait(self):
            obs, r, term, trunc, info = self.venv.step(self._actions)
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            done = term | trunc
            infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(done):
                infos[i] = {"terminal_observation": info["final_obs"][i],
                            "TimeLimit.truncated": bool(trunc[i] and not term[i])}
                if "episode" in info:
                    infos[i]["episode"] = {"r": float(info["episode"]["r"][i]), "l": int(info["episode"]["l"][i])}
            return obs, np.asarray(r, np.float32), done, infos

        def close(self):
            close = getattr(self.venv, "close", None)
            if close is not None:
                close()

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.venv, attr_name)] * len(self._indices(indices))

        def set_attr(self, attr_name, value, indices=None):
            setattr(self.venv, attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            """Calls the batched env's method once; a result with one row per env is split into those rows."""
            idx = list(self._indices(indices))
            out = getattr(self.venv, method_name)(*args, **kwargs)
            if isinstance(out, np.ndarray) and out.ndim >= 1 and out.shape[0] == self.num_envs:
                return [out[i] for i in idx]
            return [out] * len(idx)

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._indices(indices))

        def _indices(self, indices):
            if indices is None:
                return range(self.num_envs)
            return [indices] if isinstance(indices, int) else indices

    _SB3VecEnv.__name__ = _SB3VecEnv.__qualname__ = "SB3VecEnv"
    _CLASS = _SB3VecEnv
    return _CLASS


class SB3VecEnv:
    """``SB3VecEnv(venv)``: a stable_baselines3 ``VecEnv`` over one of this package's batched vector envs.

    Calling it returns an instance of the real adapter class (a subclass of SB3's ``VecEnv``, made on first
    use), so ``isinstance(x, stable_baselines3.common.vec_env.VecEnv)`` holds.
    """

    def __new__(cls, venv):
        return _adapter_class()(venv)


__all__ = ["SB3VecEnv"]
