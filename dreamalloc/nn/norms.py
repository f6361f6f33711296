"""RMSNorm, DreamerV3's normalisation after every hidden layer (eps 1e-4, a learned scale, no bias).

On the CPU in float32 the forward and backward run as two compiled loops over the rows (numba): torch composes
``F.rms_norm`` and its gradient from a power, a mean, a reciprocal square root and three products, each a pass
over the tensor with its own autograd node, and a Dreamer update calls it several hundred times (about 15 % of the
1M preset's update, forward and backward, went there). Same equations, float32 as torch; the sums are
vectorised, so the last bits differ from torch's (tests/test_dreamer.py compares the two, values and gradients).
Elsewhere (CUDA, bfloat16, inside ``torch.compile`` / ONNX export) it is ``F.rms_norm``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from dreamalloc.nn.fastmlp import kernel_ok, njit_reassoc, sigmoid32


@njit_reassoc
def _rms_forward(x, scale, eps, silu, y, rstd):
    """y = h = x / sqrt(mean(x^2) + eps) * scale row by row, or silu(h) = h sigmoid(h) with ``silu``;
    rstd[i] = 1 / sqrt(mean(x_i^2) + eps)."""
    n, d = x.shape
    inv_d = np.float32(1.0 / d)
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(d):
            acc += x[i, j] * x[i, j]
        r = np.float32(1.0) / np.sqrt(acc * inv_d + np.float32(eps))
        rstd[i] = r
        for j in range(d):
            h = x[i, j] * r * scale[j]
            y[i, j] = h * sigmoid32(h) if silu else h


@njit_reassoc
def _rms_backward(x, scale, rstd, silu, dy, dx, dscale):
    """With xh = x r, h = xh scale, dh = dy (times silu'(h) = s + h s (1 - s), s = sigmoid(h), with ``silu``) and
    g = dh scale: dscale = sum_i dh xh, dx = r (g - xh mean_j(g xh))."""
    n, d = x.shape
    inv_d = np.float32(1.0 / d)
    one = np.float32(1.0)
    acc_s = np.zeros(d, dtype=np.float64)  # summed over every row (up to ~16k): float64 keeps the rounding small
    g = np.empty(d, np.float32)  # a row's g (a local buffer: the loop vectorises)
    for i in range(n):
        r = rstd[i]
        acc = np.float32(0.0)
        for j in range(d):
            xh = x[i, j] * r
            dh = dy[i, j]
            if silu:
                h = xh * scale[j]
                s = sigmoid32(h)
                dh = dh * (s + h * s * (one - s))
            acc_s[j] += np.float64(dh * xh)
            g[j] = dh * scale[j]
            acc += g[j] * xh
        m = acc * inv_d
        for j in range(d):
            dx[i, j] = r * (g[j] - x[i, j] * r * m)
    for j in range(d):
        dscale[j] = np.float32(acc_s[j])


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1]).contiguous()


def _forward(x2: torch.Tensor, scale: torch.Tensor, eps: float, silu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.empty_like(x2)
    rstd = x2.new_empty(x2.shape[0])
    _rms_forward(x2.numpy(), scale.detach().numpy(), eps, silu, y.numpy(), rstd.numpy())
    return y, rstd


class _RMSNormCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, eps, silu):
        x2 = _rows(x)
        y, rstd = _forward(x2, scale, eps, silu)
        ctx.save_for_backward(x2, scale, rstd)
        ctx.silu = silu
        return y.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x2, scale, rstd = ctx.saved_tensors
        dx = torch.empty_like(x2)
        dscale = torch.empty_like(scale)
        _rms_backward(x2.numpy(), scale.detach().numpy(), rstd.numpy(), ctx.silu, _rows(dy).numpy(), dx.numpy(),
                      dscale.numpy())
        return dx.view(dy.shape), dscale, None, None


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float, silu: bool = False) -> torch.Tensor:
    """``F.rms_norm(x, scale.shape, scale, eps)`` over the last dimension, followed by ``F.silu`` when ``silu`` (one
    compiled pass forward and one backward on the CPU in float32; the SiLU's sigmoid there is fastmlp.sigmoid32,
    within 2e-7 of torch's)."""
    if not kernel_ok(x, scale):
        y = F.rms_norm(x, scale.shape, scale, eps)
        return F.silu(y) if silu else y
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        return _RMSNormCPU.apply(x, scale, eps, silu)
    return _forward(_rows(x), scale, eps, silu)[0].view(x.shape)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = float(eps)
        self.scale = nn.Parameter(torch.ones(int(dim)))

    def forward(self, x: torch.Tensor, silu: bool = False) -> torch.Tensor:
        """The normalised ``x``, through a SiLU too when ``silu`` (run_layers fuses the two)."""
        if x.dtype == torch.float32:
            return rms_norm(x, self.scale, self.eps, silu)
        # statistics in float32 under bf16 autocast: the mean of squares loses too much precision otherwise
        y = F.rms_norm(x.float(), self.scale.shape, self.scale.float(), self.eps).to(x.dtype)
        return F.silu(y) if silu else y


def run_layers(layers, x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``layers`` in order, each RMSNorm followed by an nn.SiLU as one op (``RMSNorm(x, silu=True)``:
    a pass over the tensor and an autograd node fewer per hidden layer; in the posterior loop's 16-row steps the op
    count is what costs)."""
    layers = tuple(layers)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, RMSNorm) and i + 1 < len(layers) and type(layers[i + 1]) is nn.SiLU:
            x = layer(x, silu=True)
            i += 2
        else:
            x = layer(x)
            i += 1
    return x


__all__ = ["RMSNorm", "rms_norm", "run_layers"]
