"""``AllocVectorEnv``: a native gymnasium VectorEnv over the batched core (not copies of a single env).

Autoreset is SAME_STEP: a heap whose episode ends returns the first observation (and info) of its next
episode; the finished step's observation and info are in ``info["final_obs"]`` (a dense [B, D] array) and
``info["final_info"]``, rows valid where ``_final_obs`` / ``_final_info``. Per-heap metrics are in ``info``
at every step; ``info["episode"]`` = {"r", "l"} where ``_episode``. ``step`` takes an integer array (or
tensor) of shape (num_envs,); any other type, dtype, shape or an out-of-range value is an ``ActionError``.
"""

from __future__ import annotations

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.gym_faces import CoreVectorEnv, check_num_envs
from dreamalloc.core.sb3 import SB3VecEnv, _vec_env_base


class AllocVectorEnv(CoreVectorEnv):
    def __init__(self, num_envs: int = 8, device: str = "cpu", jit: bool | None = None, **kwargs):
        core = AllocCore(check_num_envs(num_envs), AllocConfig.from_kwargs(**kwargs), device=device, jit=jit)
        super().__init__(core, core.cfg.obs_bounds())


def make_alloc_vecenv(num_envs: int, cfg=None, device: str = "cpu", **kwargs):
    """``AllocVectorEnv(num_envs, ...)`` behind SB3's VecEnv: from an ``AllocConfig`` or AllocConfig keywords."""
    if cfg is not None:
        if kwargs:
            raise ValueError("make_alloc_vecenv: pass either an AllocConfig or AllocConfig keywords, not both")
        kwargs = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    _vec_env_base()  # fail before building the env when SB3 is missing
    return SB3VecEnv(AllocVectorEnv(num_envs, device=device, **kwargs))


__all__ = ["AllocVectorEnv", "make_alloc_vecenv"]
