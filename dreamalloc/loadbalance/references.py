"""Episodes of a policy on the batched load-balancing core, and the references evaluations report beside it.

Row b plays ``k`` consecutive episodes of stream seed ``seed + b`` (one trial of K episodes when the core's
``trial_episodes`` is K), so E episodes of a table are one batched run, paired across methods.
"""

from __future__ import annotations

import torch

from dreamalloc.loadbalance.config import LoadBalanceConfig
from dreamalloc.loadbalance.env import LoadBalanceCore


def run_episodes(core: LoadBalanceCore, policy, seed: int = 0, k: int = 1) -> dict:
    """Play until every row has finished ``k`` episodes. ``policy(obs, info) -> actions [B]``.
    Returns numpy [B, k] arrays: ``return``, ``length``, ``mean_job_time``."""
    obs, info = core.reset(seed=seed)
    B = core.B
    count = torch.zeros(B, dtype=torch.long, device=core.device)
    out = {name: torch.zeros(B, k, dtype=torch.float64, device=core.device)
           for name in ("return", "length", "mean_job_time")}
    for _ in range(core.J * k):
        obs, _, term, trunc, info = core.step(policy(obs, info))
        ended = (term | trunc) & (count < k)
        if ended.any():
            rows = ended.nonzero().squeeze(1)
            col = count[rows]
            final = info.get("final_info", info)
            out["return"][rows, col] = info["episode"]["r"][rows]
            out["length"][rows, col] = info["episode"]["l"][rows].double()
            out["mean_job_time"][rows, col] = final["mean_job_time"][rows]
            count[rows] += 1
    if bool((count < k).any()):
        raise RuntimeError(f"{int((count < k).sum())} rows had not finished {k} episodes")
    return {name: v.cpu().numpy() for name, v in out.items()}


def dispatch_returns(rule: str, cfg: LoadBalanceConfig, episodes: int, seed: int = 0, k: int = 1,
                     device="cpu") -> dict:
    """``episodes`` rows x ``k`` episodes of a fixed dispatch rule on the streams of ``cfg``."""
    from dreamalloc.agents.dispatch import DispatchAgent  # agents import envs, not the other way round

    core = LoadBalanceCore(episodes, cfg, device=device)
    agent = DispatchAgent(core.cfg.obs_dim, core.cfg.n_actions, core.cfg, core.device, rule=rule, seed=seed)
    state = [agent.initial_state(episodes)]

    def policy(obs, info):
        a, state[0] = agent.act(obs, state[0], info)
        return a

    return run_episodes(core, policy, seed, k)


def no_wait_bound(cfg: LoadBalanceConfig, episodes: int, seed: int = 0, k: int = 1, device="cpu") -> torch.Tensor:
    """[episodes, k] returns if every job ran at once on the fastest server: no dispatcher can do better."""
    core = LoadBalanceCore(episodes, cfg, device=device, autoreset=False)
    fastest = core.rates.max()
    out = []
    for i in range(k):
        core.reset(seed=seed if i == 0 else None)
        out.append(-(core.size.double() / fastest).floor().sum(1) * cfg.reward_scale)
    return torch.stack(out, 1).cpu()


__all__ = ["dispatch_returns", "no_wait_bound", "run_episodes"]
