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
from dreamalloc.nn.layers import choosable

CHUNK_ROWS = 1 << 14  # (row, action, draw) triples per pass through the networks: bounds memory for large A x N


@torch.no_grad()
def lookahead_q(wm: WorldModel, ac: ActorCritic, deter: torch.Tensor, stoch: torch.Tensor,
                ac_h: torch.Tensor | None, draws: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Q [B, A] of every action from the posterior state (deter [B, D], stoch [B, S, K]) and the recurrent
    actor-critic's state ``ac_h`` [B, G] (None without ``ac_gru``), averaged over ``draws`` prior samples. With
    ``mask`` [B, A] only the actions ``choosable`` keeps are looked at (the valid ones; a whole row that has none)
    and the others get the lowest float. The (row, action) pairs go through the networks in
    chunks of about CHUNK_ROWS rows; the draws are the same for all."""
    B, A = deter.shape[0], wm.space.dim
    noise = gumbel_like(deter.new_empty(draws, wm.rssm.stoch, wm.rssm.classes))  # shared by every row and action
    look = torch.ones(B, A, dtype=torch.bool, device=deter.device) if mask is None else \
        choosable(mask.to(deter.device))
    pairs = look.flatten().nonzero().squeeze(1)  # pair p = (row p // A, action p % A)
    q = torch.full((B * A,), torch.finfo(torch.float32).min, device=deter.device)
    step = max(1, CHUNK_ROWS // draws)
    for i in range(0, pairs.numel(), step):
        p = pairs[i:i + step]
        r = p // A
        action = F.one_hot(p % A, A).to(deter.dtype)
        q[p] = _pair_values(wm, ac, deter[r], stoch[r], None if ac_h is None else ac_h[r], action, noise)
    return q.view(B, A)


def _pair_values(wm, ac, deter, stoch, ac_h, action, noise) -> torch.Tensor:
    """mean over the draws of r + c V after taking ``action`` [P, A] from (deter [P, D], stoch [P, S, K]): [P]."""
    P, N = deter.shape[0], noise.shape[0]
    nxt = wm.rssm.core(deter, stoch, action)  # [P, D]
    logp = wm.rssm.prior(nxt)  # [P, S, K]
    drawn = F.one_hot((logp.unsqueeze(1) + noise).argmax(-1), logp.shape[-1]).to(nxt.dtype)  # [P, N, S, K]
    feat = wm.rssm.feat(nxt.unsqueeze(1).expand(-1, N, -1), drawn)  # [P, N, F]
    h = None
    if ac.gru is not None:
        h = ac.recur(feat.flatten(0, 1), ac_h.unsqueeze(1).expand(-1, N, -1).flatten(0, 1)).view(P, N, -1)
    value = ac.critic(ac.inputs(feat, h), post=ac._mean)  # [P, N]
    return (wm.reward_mean(feat) + wm.cont_prob(feat) * value).float().mean(-1)


__all__ = ["lookahead_q"]
