"""RMSNorm, DreamerV3's normalisation after every hidden layer (eps 1e-4, a learned scale, no bias)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = float(eps)
        self.scale = nn.Parameter(torch.ones(int(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.scale.shape, self.scale, self.eps)
        # statistics in float32 under bf16 autocast: the mean of squares loses too much precision otherwise
        return F.rms_norm(x.float(), self.scale.shape, self.scale.float(), self.eps).to(x.dtype)


__all__ = ["RMSNorm"]
