"""Gymnasium faces of the batched core: ``LoadBalanceEnv`` (one env, B = 1) and ``LoadBalanceVectorEnv``
(the native batched VectorEnv, SAME_STEP autoreset: ``core.gym_faces``).

Observation: Box(float32) [per-server load (S), incoming job size, (meta obs), (task one-hot)]; action:
Discrete(S), the server. ``info`` has ``loads`` (as observed, ``load_obs``), ``work`` (true outstanding work),
``queue`` (jobs per server), ``time``, ``mean_job_time`` (so far; the episode's at its end) and ``episode``
{r, l} where an episode ended. Actions are checked as in ``core.actions`` (one int for the single env, an
integer array of shape (num_envs,) for the vector env).
"""

from __future__ import annotations

from dreamalloc.core.gym_faces import CoreEnv, CoreVectorEnv, check_num_envs
from dreamalloc.loadbalance.config import LoadBalanceConfig
from dreamalloc.loadbalance.env import LoadBalanceCore


class LoadBalanceEnv(CoreEnv):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None, device: str = "cpu", **kwargs):
        core = LoadBalanceCore(1, LoadBalanceConfig.from_kwargs(**kwargs), device=device, autoreset=False)
        super().__init__(core, core.cfg.obs_bounds(), render_mode)

    def render(self):
        _, queue, work = self.core.loads()  # [jobs:outstanding work] per server
        return (f"t={int(self.core.now[0])} job={int(self.core.incoming()[0])} "
                + " ".join(f"[{int(q)}:{int(w)}]" for q, w in zip(queue[0], work[0], strict=True)))


class LoadBalanceVectorEnv(CoreVectorEnv):
    def __init__(self, num_envs: int = 8, device: str = "cpu", **kwargs):
        core = LoadBalanceCore(check_num_envs(num_envs), LoadBalanceConfig.from_kwargs(**kwargs), device=device)
        super().__init__(core, core.cfg.obs_bounds())


__all__ = ["LoadBalanceEnv", "LoadBalanceVectorEnv"]
