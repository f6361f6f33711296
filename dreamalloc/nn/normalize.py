"""Return normalisation by an EMA of the 5th-95th percentile range (DreamerV3).

Dividing advantages by max(limit, P95 - P5) scales large returns down to about [0, 1] but never scales small
returns up, so with sparse or tiny rewards the entropy bonus is not drowned out by amplified noise.
"""

from __future__ import annotations

import torch
from torch import nn


class PercentileNormalizer(nn.Module):
    def __init__(self, rate: float = 0.01, limit: float = 1.0, lo: float = 5.0, hi: float = 95.0):
        super().__init__()
        self.rate, self.limit, self.q = float(rate), float(limit), (lo / 100.0, hi / 100.0)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        q = torch.quantile(x.detach().float().flatten(), torch.tensor(self.q, device=x.device))
        self.lo.lerp_(q[0], self.rate)
        self.hi.lerp_(q[1], self.rate)

    def scale(self) -> torch.Tensor:
        """max(limit, hi - lo): the divisor of the advantages."""
        return torch.clamp(self.hi - self.lo, min=self.limit)


__all__ = ["PercentileNormalizer"]
