"""Symlog squashing and the symexp two-hot distribution of DreamerV3's reward and value heads.

Rewards and returns span orders of magnitude across tasks; a categorical over 255 exponentially spaced bins
(``symexp(linspace(-20, 20))``) with a two-hot target learns any scale with the same cross-entropy loss and
without the gradient blow-up of a regression loss on large targets.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def symexp_bins(n: int = 255, limit: float = 20.0) -> torch.Tensor:
    """``n`` bins symexp(linspace(-limit, limit)), built from one half so they are exactly symmetric (a
    uniform distribution then predicts exactly 0)."""
    if n % 2 == 0 or n < 3:
        raise ValueError(f"two-hot bins: need an odd count >= 3, got {n}")
    half = symexp(torch.linspace(-limit, 0.0, (n - 1) // 2 + 1, dtype=torch.float64))
    return torch.cat([half, -half[:-1].flip(0)]).float()


def _twohot_parts(x: torch.Tensor, bins: torch.Tensor):
    """(below, above, w_hi): the two bins around each value of ``x`` [...] and the weight of the upper one."""
    x = x.float().contiguous()
    n = bins.shape[0]
    above = torch.bucketize(x, bins, right=True).clamp(1, n - 1)  # first bin > x (kept off the ends)
    below = above - 1
    lo, hi = bins[below], bins[above]
    return below, above, ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def twohot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """[..., n] weights on the two bins around each value of ``x`` [...], linear in the distance, so that
    ``(twohot(x) * bins).sum(-1) == x`` inside the bins' range (values outside clip to the end bins)."""
    below, above, w_hi = _twohot_parts(x, bins)
    out = torch.zeros(*below.shape, bins.shape[0], dtype=torch.float32, device=below.device)
    out.scatter_(-1, below.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


def twohot_nll(logp: torch.Tensor, targets, bins: torch.Tensor, scales=None) -> torch.Tensor:
    """-(sum_i scales[i] twohot(targets[i]) * logp).sum(-1) [...] from log-probabilities [..., n], reading only
    the bins that carry weight (one gather for all targets) instead of building [..., n] targets. ``targets``:
    a tensor or a list of same-shape tensors; as with torch.gather, ``logp`` may be longer than the targets
    along the leading dims (its first entries are used), which spares slicing, and the zero-filled gradient
    copy a slice costs, when the last step only bootstraps."""
    targets = [targets] if torch.is_tensor(targets) else list(targets)
    scales = [1.0] * len(targets) if scales is None else list(scales)
    index, weight = [], []
    for x, s in zip(targets, scales, strict=True):
        below, above, w_hi = _twohot_parts(x.detach(), bins)
        index += [below, above]
        weight += [s * (1.0 - w_hi), s * w_hi]
    return -(logp.gather(-1, torch.stack(index, -1)) * torch.stack(weight, -1)).sum(-1)


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Expected value [...] of the categorical ``logits`` [..., n] (or of ``probs``, when already computed) over
    ``bins``, as sum_j (p[m + j] - p[m - j]) bins[m + j] over the upper half: symmetric probabilities cancel
    exactly before any multiplication, so zero-initialised heads predict exactly 0."""
    if probs is None:
        probs = torch.softmax(logits.float(), -1)
    m = (bins.shape[0] - 1) // 2
    diff = probs[..., m + 1:] - probs[..., :m].flip(-1)
    return diff @ bins[m + 1:]


def twohot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy [...] of ``logits`` [..., n] against the two-hot encoding of ``target`` [...]."""
    return twohot_nll(F.log_softmax(logits.float(), -1), target, bins)


__all__ = ["symexp", "symexp_bins", "symlog", "twohot", "twohot_loss", "twohot_mean", "twohot_nll"]
