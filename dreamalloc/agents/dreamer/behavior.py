"""The actor-critic trained in imagination: lambda returns, a REINFORCE actor with percentile-normalised
advantages, a two-hot critic held close to its slow EMA copy, and the replay value loss.

The world model gets no gradient from these losses (imagination runs from detached start states under
no_grad), exactly as DreamerV3 with ``ac_grads: False``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from dreamalloc.agents.dreamer.actions import ActionSpace
from dreamalloc.agents.dreamer.config import DreamerConfig
from dreamalloc.nn.dense import norm_mlp, norm_mlps
from dreamalloc.nn.normalize import PercentileNormalizer
from dreamalloc.nn.twohot import symexp_bins, twohot_mean, twohot_nll


def lambda_return(last: torch.Tensor, term: torch.Tensor, reward: torch.Tensor, boot: torch.Tensor,
                  disc: float, lam: float) -> torch.Tensor:
    """TD(lambda) returns [N, T-1] of sequences [N, T] where ``reward[t]`` is the reward on the way into step t
    and ``boot[t]`` the value bootstrapped at step t:

        R_t = r_{t+1} + disc (1 - term_{t+1}) ((1 - c) boot_{t+1} + c R_{t+1}),  c = lam (1 - last_{t+1}),

    with R_{T-1} = boot_{T-1}; ``term`` may be fractional (a predicted continue probability)."""
    live = (1.0 - term.float())[:, 1:] * disc
    cont = (1.0 - last.float())[:, 1:] * lam
    interm = reward[:, 1:] + (1.0 - cont) * live * boot[:, 1:]
    ret = boot[:, -1]
    out = []
    for t in reversed(range(live.shape[1])):
        ret = interm[:, t] + live[:, t] * cont[:, t] * ret
        out.append(ret)
    return torch.stack(out[::-1], 1)


def twohot_ce(logp: torch.Tensor, target: torch.Tensor, slow: torch.Tensor, slowreg: float,
              bins: torch.Tensor) -> torch.Tensor:
    """The critic's loss [...] from its log-probabilities [..., n]: cross-entropy to the two-hot return target
    plus ``slowreg`` times the cross-entropy to the slow critic's prediction (one log-softmax for both)."""
    return twohot_nll(logp, [target, slow], bins, [1.0, slowreg])


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits.float(), -1)


class ActorCritic(nn.Module):
    def __init__(self, feat_dim: int, space: ActionSpace, c: DreamerConfig):
        super().__init__()
        self.c, self.space = c, space
        g = int(getattr(c, "ac_gru", 0))  # the recurrent actor-critic's GRU units (0: none)
        self.actor = norm_mlp(feat_dim + g, c.units, c.ac_layers, space.dim, outscale=0.01)
        self.critic = norm_mlp(feat_dim + g, c.units, c.ac_layers, c.bins, outscale=0.0)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = PercentileNormalizer(c.retnorm_rate, c.retnorm_limit)
        self.register_buffer("bins", symexp_bins(c.bins), persistent=False)
        self.gru = nn.GRUCell(feat_dim, g) if g > 0 else None

    def recur(self, feat: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor | None:
        """The recurrent actor-critic's next state [N, G] after ``feat`` [N, F] (None without ``ac_gru``)."""
        return None if self.gru is None else self.gru(feat.float(), h.float())

    @staticmethod
    def inputs(feat: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        """What the actor and critic read: the features, then the GRU state when there is one."""
        return feat if h is None else torch.cat([feat, h.to(feat.dtype)], -1)

    def logp(self, feat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities [..., A] of the policy (per action dimension, actions.ActionSpace.log_probs):
        softmax over the valid actions mixed with 1 % uniform over them."""
        return self.space.log_probs(self.actor(feat), mask, self.c.unimix)

    def _mean(self, logits: torch.Tensor) -> torch.Tensor:
        return twohot_mean(logits, self.bins)

    def value_heads(self) -> list:
        """The critic (log-probabilities, with gradient) and the slow critic (means, without) as ``norm_mlps`` takes
        them: the losses read both on the same features."""
        return [(self.critic, _log_softmax, True), (self.slow_critic, self._mean, False)]

    @torch.no_grad()
    def update_slow(self) -> None:
        torch._foreach_lerp_(list(self.slow_critic.parameters()), list(self.critic.parameters()), self.c.slow_rate)

    def loss(self, feat: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor, cont: torch.Tensor,
             mask0: torch.Tensor | None, rep: dict | None = None, logp: torch.Tensor | None = None,
             actent: float | None = None, values: list | None = None):
        """Imagination losses from detached imagined features [N, H+1, F], one-hot actions [N, H+1, A],
        predicted rewards and continues [N, H+1] and the start states' action masks [N, A] (or None).
        ``rep`` (optional) holds replayed features [B, T, F] with reward / terminal / last [B, T] for the
        replay value loss, where B x T = N in the order of the imagination starts. ``logp`` [N, H+1, A]: the
        policy's log-probabilities (with their graph) if imagination already computed them. ``actent``: the
        entropy scale of this update (default: the config's ``actent``). ``values``: ``norm_mlps(feat,
        value_heads())`` if the caller computed it with other heads on the same features."""
        c = self.c
        # heads run on every step (the last one only bootstraps) and are sliced after: slicing the input would
        # copy the whole [N, H, F] batch of features
        critic_lp, slow = norm_mlps(feat, self.value_heads()) if values is None else values  # [N, H+1, bins], [N, H+1]
        with torch.no_grad():
            val = twohot_mean(None, self.bins, critic_lp.exp())
            weight = torch.cumprod(cont, 1)  # the discount is inside cont (contdisc)
            ret = lambda_return(torch.zeros_like(cont), 1.0 - cont, reward, val, 1.0, c.lam)  # [N, H]
            self.retnorm.update(ret)
            scale = self.retnorm.scale()
            adv = (ret - val[:, :-1]) / scale
        if logp is None:
            mask = None
            if mask0 is not None:  # only the start state's mask is known; imagined states are unmasked
                mask = torch.ones(*feat.shape[:2], self.space.dim, dtype=torch.bool, device=feat.device)
                mask[:, 0] = mask0
            logp = self.logp(feat, mask)
        logp = logp[:, :-1]
        logpi = (logp * actions[:, :-1]).sum(-1)
        ent = -(logp.exp() * logp).sum(-1)
        w = weight[:, :-1]
        policy = (w * -(logpi * adv + (c.actent if actent is None else actent) * ent)).mean()
        value = (w * twohot_ce(critic_lp, ret, slow[:, :-1], c.slowreg, self.bins)).mean()
        losses = {"policy": policy, "value": value}
        metrics = {"ret": ret.mean(), "ret_scale": scale, "adv": adv.mean(), "entropy": ent.detach().mean(),
                   "val": val.mean(), "imag_reward": reward.mean(), "imag_cont": cont.mean()}
        if rep is not None:
            B, T = rep["reward"].shape
            lp_r, slow_r = norm_mlps(rep["feat"], self.value_heads())  # [B, T, ...]; the loss reads the first T-1
            slow_r = slow_r[:, :-1]
            with torch.no_grad():
                boot = ret[:, 0].reshape(B, T)
                ret_r = lambda_return(rep["last"], rep["terminal"], rep["reward"], boot, rep["discount"], c.lam)
            vl_r = twohot_ce(lp_r, ret_r, slow_r, c.slowreg, self.bins)
            losses["repval"] = ((~rep["last"][:, :-1]).float() * vl_r).mean()
        return losses, metrics


__all__ = ["ActorCritic", "lambda_return"]
