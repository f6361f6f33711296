"""The world model: encoder, RSSM, decoder, reward and continue heads, and their loss on replayed sequences."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dreamalloc.agents.dreamer.actions import ActionSpace
from dreamalloc.agents.dreamer.config import DreamerConfig
from dreamalloc.agents.dreamer.rssm import RSSM, categorical_kl
from dreamalloc.nn.dense import norm_mlp, norm_mlps
from dreamalloc.nn.twohot import symexp_bins, symlog, twohot_loss, twohot_mean


def kl_losses(post: torch.Tensor, prior: torch.Tensor, free_nats: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV3's two KL terms [...] from log-probabilities [..., S, K]: ``dyn`` trains the prior towards
    the (frozen) posterior, ``rep`` the posterior towards the (frozen) prior; each is clipped below at
    ``free_nats`` so that, once the KL is small, the gradient goes to the prediction losses instead."""
    dyn = categorical_kl(post.detach(), prior)
    rep = categorical_kl(post, prior.detach())
    return dyn.clamp(min=free_nats), rep.clamp(min=free_nats)


def _cont_post(logits: torch.Tensor) -> torch.Tensor:
    """The continue head's probability from its logit [..., 1]."""
    return torch.sigmoid(logits.squeeze(-1).float())


class WorldModel(nn.Module):
    def __init__(self, obs_dim: int, space: ActionSpace, c: DreamerConfig):
        super().__init__()
        self.space = space
        self.encoder = norm_mlp(obs_dim, c.units, c.enc_layers)
        self.rssm = RSSM(space.dim, c.units, c.deter, c.hidden, c.stoch, c.classes, c.blocks, c.unimix)
        f = self.rssm.feat_dim
        self.decoder = norm_mlp(f, c.units, c.dec_layers, obs_dim)
        self.reward = norm_mlp(f, c.units, c.head_layers, c.bins, outscale=0.0)
        self.cont = norm_mlp(f, c.units, c.head_layers, 1)
        self.register_buffer("bins", symexp_bins(c.bins), persistent=False)
        self.discount = 1.0 - 1.0 / c.horizon
        self.c = c
        self.obs_step_fn = None  # a torch.compile'd rssm.post_step when compiling (see agent.py)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(symlog(obs))

    def _reward_post(self, logits: torch.Tensor) -> torch.Tensor:
        return twohot_mean(logits, self.bins)

    def reward_mean(self, feat: torch.Tensor) -> torch.Tensor:
        return self.reward(feat, post=self._reward_post)

    def cont_prob(self, feat: torch.Tensor) -> torch.Tensor:
        """(1 - terminal) x discount, as predicted."""
        return self.cont(feat, post=_cont_post)

    def prediction_heads(self) -> list:
        """The reward mean and continue probability heads as ``norm_mlps`` takes them (without gradient), to run with
        other heads on the same features."""
        return [(self.reward, self._reward_post, False), (self.cont, _cont_post, False)]

    def loss(self, data: dict, deter0: torch.Tensor, stoch0: torch.Tensor):
        """Losses (scalars, unscaled) on sequences [B, T] from the carry (deter0, stoch0); also the posterior
        states [B, T, ...] and features for imagination and the replay value loss."""
        c = self.c
        obs = data["obs"]
        prev = data["prev_action"]
        actions = self.space.onehot(prev)  # zeros where there is no previous action (-1)
        tokens = self.encode(obs)
        deter, stoch, post = self.rssm.observe(deter0, stoch0, actions, tokens, data["first"],
                                                self.obs_step_fn)
        prior = self.rssm.prior(deter)
        dyn, rep = kl_losses(post, prior, c.free_nats)
        feat = self.rssm.feat(deter, stoch)
        recon, rew_logits, con_logits = norm_mlps(feat, [(net, None, True) for net in (self.decoder, self.reward,
                                                                                        self.cont)])
        rec = (recon.float() - symlog(obs)).square().sum(-1)
        rew = twohot_loss(rew_logits, data["reward"], self.bins)
        con_target = (~data["terminal"]).float() * self.discount
        con = F.binary_cross_entropy_with_logits(con_logits.squeeze(-1).float(), con_target, reduction="none")
        losses = {"dyn": dyn.mean(), "rep": rep.mean(), "rec": rec.mean(), "rew": rew.mean(), "con": con.mean()}
        return losses, deter, stoch, feat


__all__ = ["WorldModel", "kl_losses"]
