"""Advantages and bootstrapped returns over a rollout of [T, B] tensors, shared by PPO and A2C.

Episodes end in two ways that must not be confused: a *termination* (the MDP reached a terminal state: its
value is 0, nothing to bootstrap) and a *truncation* (a time limit cut the episode: the state still has a
value, so the target bootstraps from V(final obs)). Both cut the recursion, since the next step in the
rollout belongs to a new episode. The caller therefore passes, for every step t,

* ``next_values[t]`` = V(s_{t+1}) of the true successor of step t: the next obs in the same episode, the
  pre-reset final obs where the episode ended (only its truncated rows matter), V(last obs) at t = T-1;
* ``terminated[t]``: no bootstrap at all after step t;
* ``ended[t]``: step t is the last of its episode (terminated or truncated): the recursion stops there.

An RL^2 learner whose returns run across the episodes of a trial passes trial ends as ``ended`` (and only
terminations that close a trial as ``terminated``); nothing here knows about episodes beyond these flags.
"""

from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        ended: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """GAE(lambda) advantages [T, B] (Schulman et al. 2016); all inputs [T, B], flags bool."""
    if not (rewards.shape == values.shape == next_values.shape == terminated.shape == ended.shape):
        raise ValueError(f"gae: all inputs must share one [T, B] shape, got rewards {tuple(rewards.shape)}, "
                         f"values {tuple(values.shape)}, next_values {tuple(next_values.shape)}, "
                         f"terminated {tuple(terminated.shape)}, ended {tuple(ended.shape)}")
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    keep_v = (~terminated).to(dtype)  # bootstrap unless the MDP terminated
    keep_a = (~ended).to(dtype) * (gamma * lam)  # carry the next advantage unless the episode ended here
    deltas = rewards.to(dtype) + gamma * keep_v * next_values.to(dtype) - values.to(dtype)
    adv = torch.empty_like(deltas)
    last = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        last = deltas[t] + keep_a[t] * last
        adv[t] = last
    return adv


def nstep_returns(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
                  terminated: torch.Tensor, ended: torch.Tensor, gamma: float) -> torch.Tensor:
    """A2C's bootstrapped n-step returns [T, B]: the discounted rewards up to the rollout's end or the
    episode's, plus the discounted bootstrap value there. That is GAE with lambda = 1 plus V(s_t) (the
    deltas telescope), so one recursion serves both."""
    return gae(rewards, values, next_values, terminated, ended, gamma, 1.0) + values.to(
        torch.promote_types(rewards.dtype, values.dtype))


__all__ = ["gae", "nstep_returns"]
