"""PPO (Schulman et al. 2017) on the batched env: clipped surrogate, GAE, minibatch epochs over each rollout.

Semantics follow Stable-Baselines3's PPO so the two can be compared hyperparameter for hyperparameter:
advantages normalised per minibatch, value loss = MSE to the GAE returns, entropy bonus, gradient-norm
clipping, optional linear annealing of the learning rate and of the clip range over ``total_steps``, and
early stopping of an update when the approximate KL passes 1.5 x ``target_kl``. Value clipping, when on,
takes the larger of the clipped and unclipped errors (the original PPO code; SB3 uses the clipped one only).
Invalid actions (address / hole spaces) are masked in acting and in the loss, so none is ever sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from dreamalloc.agents.onpolicy import OnPolicyAgent, OnPolicyConfig, policy_terms
from dreamalloc.core.checks import COUNT, POSITIVE, between


@dataclass
class PPOConfig(OnPolicyConfig):
    RANGES: ClassVar[dict] = {"n_epochs": COUNT, "batch_size": COUNT, "clip": between(0.0, 1.0, lo_open=True),
                              "clip_vf": POSITIVE, "target_kl": POSITIVE}
    name: str = "ppo"
    n_steps: int = 2048
    n_epochs: int = 10
    batch_size: int = 64
    clip: float = 0.2
    anneal_clip: bool = False  # linear decay of the clip range to 0 over total_steps (rl-zoo's lin_0.2)
    clip_vf: float | None = None  # value clipping range; None: off
    target_kl: float | None = None  # stop an update's epochs early past 1.5 x this; None: never


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, values: torch.Tensor,
             old_values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, clip: float,
             clip_vf: float | None = None, ent_coef: float = 0.0, vf_coef: float = 0.5,
             normalize_advantage: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO objective on one minibatch (any common shape): loss to minimise and detached statistics."""
    if normalize_advantage and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    policy_loss = -torch.min(adv * ratio, adv * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()
    if clip_vf is None:
        value_loss = F.mse_loss(values, returns)
    else:
        clipped = old_values + (values - old_values).clamp(-clip_vf, clip_vf)
        value_loss = torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
    ent = entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent
    with torch.no_grad():
        stats = {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "entropy": ent.detach(),
                 "approx_kl": ((ratio - 1.0) - log_ratio).mean(), "clip_fraction": ((ratio - 1.0).abs() > clip)
                 .float().mean()}
    return loss, stats


class PPOAgent(OnPolicyAgent):
    name = "ppo"
    Config = PPOConfig

    def _make_config(self, hparams):
        c = super()._make_config(hparams)
        if c.n_epochs < 1 or c.batch_size < 1:
            raise ValueError(f"agent=ppo: n_epochs and batch_size must be >= 1, got {c.n_epochs} and {c.batch_size}")
        if c.clip <= 0 or (c.clip_vf is not None and c.clip_vf <= 0):
            raise ValueError(f"agent=ppo: clip (and clip_vf when set) must be > 0, got {c.clip} and {c.clip_vf}")
        if c.target_kl is not None and c.target_kl <= 0:
            raise ValueError(f"agent=ppo: target_kl must be > 0 or null, got {c.target_kl}")
        return c

    def _anneals(self, c) -> bool:
        return bool(c.anneal_lr or c.anneal_clip)

    def _learn(self, adv, ret, step):
        c = self.cfg
        clip = c.clip * (self._progress_left(step) if c.anneal_clip else 1.0)
        clip = max(clip, 1e-8)
        sums: dict[str, torch.Tensor] = {}
        n, stopped = 0, False
        for _ in range(c.n_epochs):
            for idx in self._minibatches(c.batch_size):
                if self.fast is not None:  # the same loss in the compiled kernel (onpolicy.py, _ac_grad)
                    stats = self._fast_loss(idx, adv, ret, True, clip)
                    loss = stats.pop("loss")
                else:
                    mb = self._take(idx, adv, ret)
                    logits, values = self._evaluate(mb)
                    logp, entropy = policy_terms(logits, mb["actions"])
                    loss, stats = ppo_loss(logp, mb["logp"], mb["adv"], values, mb["values"], mb["ret"], entropy,
                                           clip, c.clip_vf, c.ent_coef, c.vf_coef, c.normalize_advantage)
                if c.target_kl is not None and float(stats["approx_kl"]) > 1.5 * c.target_kl:
                    stopped = True
                    break
                stats["grad_norm"] = self._step(loss)
                for k, v in stats.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                n += 1
            if stopped:
                break
        out = {k: float(v) / max(n, 1) for k, v in sums.items()}
        out.update(clip_range=clip, minibatches=float(n), early_stop=float(stopped))
        return out


__all__ = ["PPOAgent", "PPOConfig", "ppo_loss"]
