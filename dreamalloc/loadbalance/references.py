"""Episodes of a policy on the batched load-balancing core, and the references evaluations report beside it.

Row b plays ``k`` consecutive episodes of stream seed ``seed + b`` (one trial of K episodes when the core's
``trial_episodes`` is K), so E episodes of a table are one batched run, paired across methods.
"""

from __future__ import annotations

import torch

from dreamalloc.core.rollout import run_episodes
from dreamalloc.loadbalance.config import LoadBalanceConfig
from dreamalloc.loadbalance.env import LoadBalanceCore
from dreamalloc.loadbalance.rules import DispatchRule


def dispatch_returns(rule: str, cfg: LoadBalanceConfig, episodes: int, seed: int = 0, k: int = 1,
                     device="cpu") -> dict:
    """``episodes`` rows x ``k`` episodes of a fixed dispatch rule on the streams of ``cfg``."""
    core = LoadBalanceCore(episodes, cfg, device=device)
    rule_policy = DispatchRule(rule, core.cfg.service_rates, seed, core.device)
    state = [rule_policy.initial_state(episodes)]

    def policy(obs, info):
        a, state[0] = rule_policy.act(obs, state[0], info)
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


__all__ = ["dispatch_returns", "no_wait_bound"]
