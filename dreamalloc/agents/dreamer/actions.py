"""Discrete and multi-discrete actions for DreamerV3: one categorical per action dimension.

Networks see an action as the concatenation of its dimensions' one-hots ([..., sum(nvec)]); the policy's
log-probabilities use the same layout, normalised per dimension, so (logp * onehot).sum(-1) is the joint
log-probability and -(p * logp).sum(-1) the joint entropy of the factorised policy. A plain Discrete(n) is
the one-dimension case and keeps its [B] integer actions; MultiDiscrete(nvec) acts with [B, D] integers.
Action masks have the one-hot layout too (gymnasium's per-dimension masks, concatenated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from dreamalloc.nn.layers import masked_logits


class ActionSpace:
    def __init__(self, n_actions: int | Sequence[int]):
        self.multi = not isinstance(n_actions, (int, np.integer))
        nvec = tuple(int(n) for n in n_actions) if self.multi else (int(n_actions),)
        if not nvec or any(n < 1 for n in nvec):
            raise ValueError(f"agent=dreamer: an action space needs dimensions of >= 1 actions each, got {n_actions!r}")
        self.nvec, self.dim = nvec, sum(nvec)

    def __repr__(self) -> str:
        return f"MultiDiscrete{list(self.nvec)}" if self.multi else f"Discrete({self.nvec[0]})"

    def onehot(self, action: torch.Tensor) -> torch.Tensor:
        """[..., dim] float one-hots of integer actions ([...] or [..., D]); -1 (no action yet) gives zeros."""
        a = action.long() if self.multi else action.long().unsqueeze(-1)
        parts = [F.one_hot(a[..., i].clamp(min=0), n) * (a[..., i:i + 1] >= 0) for i, n in enumerate(self.nvec)]
        return torch.cat(parts, -1).float() if self.multi else parts[0].float()

    def log_probs(self, logits: torch.Tensor, mask: torch.Tensor | None, unimix: float) -> torch.Tensor:
        """Per-dimension log-probabilities [..., dim]: softmax over each dimension's valid actions mixed with
        ``unimix`` uniform over them (invalid actions keep probability 0, at the dtype's lowest log value)."""
        masks = mask.to(torch.bool).split(self.nvec, -1) if mask is not None else [None] * len(self.nvec)
        out = [_group_logp(lg, m, unimix) for lg, m in zip(logits.split(self.nvec, -1), masks, strict=True)]
        return out[0] if len(out) == 1 else torch.cat(out, -1)

    def sample(self, logp: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer actions [...] or [..., D], their one-hots [..., dim]) drawn from ``log_probs`` (the mode
        when ``deterministic``)."""
        if not deterministic:
            u = torch.rand_like(logp).clamp_(min=torch.finfo(logp.dtype).tiny)
            logp = logp - torch.log(-torch.log(u))  # Gumbel-max: argmax per dimension is a draw
        index = torch.stack([g.argmax(-1) for g in logp.split(self.nvec, -1)], -1)
        action = index if self.multi else index.squeeze(-1)
        return action, self.onehot(action).to(logp.dtype)


def _group_logp(logits: torch.Tensor, mask: torch.Tensor | None, unimix: float) -> torch.Tensor:
    logits = masked_logits(logits.float(), mask)
    probs = torch.softmax(logits, -1)
    if unimix > 0:
        n = logits.shape[-1]
        if mask is None:
            uniform = torch.full_like(probs, 1.0 / n)
        else:
            valid = mask.to(probs.dtype)
            count = valid.sum(-1, keepdim=True)
            uniform = torch.where(count > 0, valid / count.clamp(min=1), 1.0 / n)
        probs = (1.0 - unimix) * probs + unimix * uniform
    tiny = torch.finfo(probs.dtype).tiny  # log of a clamped value: no NaN gradient through the masked entries
    return torch.where(probs > 0, torch.log(probs.clamp(min=tiny)), torch.finfo(probs.dtype).min)


__all__ = ["ActionSpace"]
