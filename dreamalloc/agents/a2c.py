"""A2C (Mnih et al. 2016, synchronous): one gradient step per short rollout on n-step advantages.

Stable-Baselines3's A2C semantics and defaults: 5 steps per env, RMSprop (alpha 0.99, eps 1e-5), lr 7e-4,
value coefficient 0.5, no entropy bonus, gradient norm clipped at 0.5, ``gae_lambda`` 1 (plain bootstrapped
n-step returns; below 1 it becomes GAE), advantages not normalised. Rollout, returns, masking and
checkpoints are the shared on-policy machinery (onpolicy.py); only the loss lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.nn import functional as F

from dreamalloc.agents.onpolicy import OnPolicyAgent, OnPolicyConfig, policy_terms


@dataclass
class A2CConfig(OnPolicyConfig):
    name: str = "a2c"
    n_steps: int = 5
    gae_lambda: float = 1.0
    lr: float = 7e-4
    normalize_advantage: bool = False
    optimizer: str = "rmsprop"


class A2CAgent(OnPolicyAgent):
    name = "a2c"
    Config = A2CConfig

    def _learn(self, adv, ret, step):
        c = self.cfg
        if self.fast is not None:  # the same loss in the compiled kernel (onpolicy.py, _ac_grad)
            st = self._fast_loss(next(self._minibatches(None)), adv, ret, False)
            grad_norm = self._step(st["loss"])
            return {"policy_loss": float(st["policy_loss"]), "value_loss": float(st["value_loss"]),
                    "entropy": float(st["entropy"]), "grad_norm": float(grad_norm)}
        mb = self._take(next(self._minibatches(None)), adv, ret)
        logits, values = self._evaluate(mb)
        logp, entropy = policy_terms(logits, mb["actions"])
        a = mb["adv"]
        if c.normalize_advantage and a.numel() > 1:
            a = (a - a.mean()) / (a.std() + 1e-8)
        policy_loss = -(a * logp).mean()
        value_loss = F.mse_loss(values, mb["ret"])
        ent = entropy.mean()
        grad_norm = self._step(policy_loss + c.vf_coef * value_loss - c.ent_coef * ent)
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": ent.item(),
                "grad_norm": float(grad_norm)}


__all__ = ["A2CAgent", "A2CConfig"]
