"""Decision-time lookahead for deterministic acting (``greedy_plan: N``): one step through the world model.

From the latent the agent acts in, each action a is taken once in the model: the prior step gives the next
deterministic state, N draws of the prior's stochastic state (the same N Gumbel draws for every action and row:
common random numbers, so the comparison between actions is not drowned in the draws' noise) give the predicted
reward r, the continue probability c (the discount included, as in imagination) and the critic's value V there,
and

    Q(a) = mean over the draws of  r + c V,

the action taken being the argmax of Q over the valid actions: one step of policy improvement on the learnt model
and critic, instead of the actor's mode. On the last step of a trial (c near 0) it picks the action of the highest
predicted reward. The recurrent actor-critic's GRU (``ac_gru``) steps on each drawn feature before the critic reads
it, as in imagination. Cost: A x N rows through the prior, the heads and the critic per decision; single Discrete
action spaces only (a MultiDiscrete space has too many joint actions to enumerate).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from dreamalloc.agents.dreamer.behavior import ActorCritic
from dreamalloc.agents.dreamer.rssm import gumbel_like
from dreamalloc.agents.dreamer.world_model import WorldModel


@torch.no_grad()
def lookahead_q(wm: WorldModel, ac: ActorCritic, deter: torch.Tensor, stoch: torch.Tensor,
                ac_h: torch.Tensor | None, draws: int) -> torch.Tensor:
    """Q [B, A] of every action from the posterior state (deter [B, D], stoch [B, S, K]) and the recurrent
    actor-critic's state ``ac_h`` [B, G] (None without ``ac_gru``), averaged over ``draws`` prior samples."""
    B, A = deter.shape[0], wm.space.dim
    actions = torch.eye(A, device=deter.device, dtype=deter.dtype).repeat(B, 1)  # [B A, A]: row b, action a
    nxt = wm.rssm.core(deter.repeat_interleave(A, 0), stoch.repeat_interleave(A, 0), actions)  # [B A, D]
    logp = wm.rssm.prior(nxt)  # [B A, S, K]
    noise = gumbel_like(logp.new_empty(draws, *logp.shape[1:]))  # [N, S, K], shared by every row and action
    drawn = F.one_hot((logp.unsqueeze(1) + noise).argmax(-1), logp.shape[-1]).to(nxt.dtype)  # [B A, N, S, K]
    feat = wm.rssm.feat(nxt.unsqueeze(1).expand(-1, draws, -1), drawn)  # [B A, N, F]
    h = None
    if ac.gru is not None:
        h0 = ac_h.repeat_interleave(A, 0).unsqueeze(1).expand(-1, draws, -1)
        h = ac.recur(feat.flatten(0, 1), h0.flatten(0, 1)).view(B * A, draws, -1)
    value = ac.critic(ac.inputs(feat, h), post=ac._mean)  # [B A, N]
    q = wm.reward_mean(feat) + wm.cont_prob(feat) * value
    return q.float().mean(-1).view(B, A)


__all__ = ["lookahead_q"]
