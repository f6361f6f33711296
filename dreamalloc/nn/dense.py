"""DreamerV3's dense layers: fan-in truncated-normal initialisation with an output scale, and the
Linear -> RMSNorm -> SiLU stack every one of its networks is built from.

``outscale`` multiplies the initial weight variance: 0 for the reward and critic outputs (they start by
predicting exactly 0, so early returns do not chase random values), 0.01 for the policy (near uniform).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dreamalloc.nn.norms import RMSNorm

_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def trunc_normal_in_(weight: torch.Tensor, fan_in: int, scale: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        if scale == 0.0:
            return weight.zero_()
        std = math.sqrt(scale / fan_in) / _TRUNC_STD
        return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


def dense(in_dim: int, out_dim: int, outscale: float = 1.0) -> nn.Linear:
    layer = nn.Linear(int(in_dim), int(out_dim))
    trunc_normal_in_(layer.weight, int(in_dim), outscale)
    nn.init.zeros_(layer.bias)
    return layer


class NormMLP(nn.Sequential):
    """An nn.Sequential (same parameter names) that, on CPU, runs inputs of many rows in slices of
    ``CPU_ROWS``: the whole stack on one slice stays in cache, and BLAS is 1.5x faster on 1k-row slices than on
    the 16k-row batch of imagined states (measured: scripts/bench_dreamer.py, docs/results.md). ``post`` (a
    row-wise function of the output, e.g. a log-softmax or a two-hot mean) runs on each slice too, while it is
    still in cache, instead of on the concatenated [rows, 255] output."""

    CPU_ROWS = 1024

    def forward(self, x: torch.Tensor, post=None) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1)
        if x.device.type != "cpu" or rows <= 2 * self.CPU_ROWS:
            out = super().forward(x)
            return out if post is None else post(out)
        parts = []
        for part in x.reshape(rows, x.shape[-1]).split(self.CPU_ROWS):
            y = super().forward(part)
            parts.append(y if post is None else post(y))
        out = torch.cat(parts)
        return out.view(*x.shape[:-1], *out.shape[1:])


def norm_mlp(in_dim: int, units: int, layers: int, out_dim: int | None = None, outscale: float = 1.0,
             eps: float = 1e-4) -> NormMLP:
    """``layers`` x (Linear -> RMSNorm -> SiLU) of width ``units``, then a Linear to ``out_dim`` if given."""
    mods: list[nn.Module] = []
    d = int(in_dim)
    for _ in range(int(layers)):
        mods += [dense(d, units), RMSNorm(units, eps), nn.SiLU()]
        d = int(units)
    if out_dim is not None:
        mods.append(dense(d, out_dim, outscale))
    return NormMLP(*mods)


__all__ = ["NormMLP", "dense", "norm_mlp", "trunc_normal_in_"]
