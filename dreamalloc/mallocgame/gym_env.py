"""Gymnasium faces of the batched game: ``MallocGameEnv`` (one env, B = 1) and ``MallocGameVectorEnv`` (the
native batched VectorEnv, SAME_STEP autoreset): ``core.gym_faces`` with the game's bounds and rendering.

Observation: Box(float32) [the game's features (see ``env.py``), (meta obs), (task one-hot)]; action:
Discrete(K + 1): a feasible gap, or K = slow memory; ``info["action_mask"]`` says which are valid. ``info``
also has ``gap_bottom`` / ``gap_length`` of the K gap slots, ``fast_benefit`` and ``benefit_fraction`` (so
far; the episode's at its end) and ``episode`` {r, l} where an episode ended.
"""

from __future__ import annotations

import numpy as np

from dreamalloc.core.gym_faces import CoreEnv, CoreVectorEnv, check_num_envs
from dreamalloc.mallocgame.config import MallocGameConfig
from dreamalloc.mallocgame.env import MallocGameCore


def _bounds(core: MallocGameCore) -> tuple[np.ndarray, np.ndarray]:
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
    return np.asarray(lo, np.float32), np.asarray(hi, np.float32)


class MallocGameEnv(CoreEnv):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None, device: str = "cpu", **kwargs):
        core = MallocGameCore(1, MallocGameConfig.from_kwargs(**kwargs), device=device, autoreset=False)
        super().__init__(core, _bounds(core), render_mode)

    def render(self):
        d = self.core.domain
        b, ln, ok = d.gaps()
        gaps = " ".join(f"[{int(x)}+{int(n)}]" for x, n, v in zip(b[0], ln[0], ok[0], strict=True) if v)
        k = int(d.k[0])
        return (f"buffer {k}/{int(d.n[0])} size={int(d.size[0, min(k, d.N - 1)])} capacity={int(d.cap[0])} "
                f"gaps {gaps or '-'} fast_benefit={float(d.got[0]):.6g}")


class MallocGameVectorEnv(CoreVectorEnv):
    def __init__(self, num_envs: int = 8, device: str = "cpu", **kwargs):
        core = MallocGameCore(check_num_envs(num_envs), MallocGameConfig.from_kwargs(**kwargs), device=device)
        super().__init__(core, _bounds(core))


__all__ = ["MallocGameEnv", "MallocGameVectorEnv"]
