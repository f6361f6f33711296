"""DreamerV3's dense layers: fan-in truncated-normal initialisation with an output scale, and the
Linear -> RMSNorm -> SiLU stack every one of its networks is built from.

``outscale`` multiplies the initial weight variance: 0 for the reward and critic outputs (they start by
predicting exactly 0, so early returns do not chase random values), 0.01 for the policy (near uniform).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dreamalloc.nn.norms import RMSNorm, run_layers

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
            out = run_layers(self, x)
            return out if post is None else post(out)
        parts = []
        for part in x.reshape(rows, x.shape[-1]).split(self.CPU_ROWS):
            y = run_layers(self, part)
            parts.append(y if post is None else post(y))
        out = torch.cat(parts)
        return out.view(*x.shape[:-1], *out.shape[1:])


class _SharedInputLinear(torch.autograd.Function):
    """The first Linear layers of several nets on one input as one product: (x, w_1, b_1, ..., w_n, b_n) ->
    (y_1, ..., y_n). Backward computes only the gradients asked for (a weight handed in detached gets none)."""

    @staticmethod
    def forward(ctx, x, *wb):
        ws, bs = wb[0::2], wb[1::2]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, *ws)
        y = torch.addmm(torch.cat(bs), x, torch.cat(ws).t())
        return tuple(part.contiguous() for part in y.split([w.shape[0] for w in ws], 1))

    @staticmethod
    def backward(ctx, *grads):
        x, *ws = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx, out = None, []
        for i, (g, w) in enumerate(zip(grads, ws, strict=True)):
            if g is None:
                out += [None, None]
                continue
            if need[0]:
                gx = g @ w if gx is None else torch.addmm(gx, g, w)  # (not addmm_: FLOP counters skip it)
            out += [g.t() @ x if need[1 + 2 * i] else None, g.sum(0) if need[2 + 2 * i] else None]
        return (gx, *out)


def norm_mlps(x: torch.Tensor, heads) -> list[torch.Tensor]:
    """Several NormMLPs on the same input ``x`` [..., d], as ``[net(x, post) for net, post, grad in heads]`` (the same
    numbers), where ``grad`` False computes that net's output as under no_grad. Their first Linear layers run as one
    matrix product, so ``x`` is read once rather than once per net: for the 16k x 640 features of an imagined batch
    on the CPU, reading them from memory four times cost more than the products (about 20 ms of a 1M-preset update,
    docs/results.md). Rows go through in NormMLP's CPU slices, each net's remaining layers and ``post`` on a slice
    while it is in cache. Under autocast each net runs on its own."""
    heads = [(net, post, bool(grad)) for net, post, grad in heads]
    firsts = [net[0] for net, _, _ in heads]
    if len({(f.in_features, f.weight.dtype, f.weight.device) for f in firsts}) > 1 or \
            not all(isinstance(f, nn.Linear) and f.bias is not None for f in firsts):
        raise ValueError("norm_mlps: every net must start with a Linear layer (with bias) on the same input size")
    rows = x.numel() // max(x.shape[-1], 1)
    if len(heads) == 1 or rows == 0 or torch.is_autocast_enabled(x.device.type):
        outs = []
        for net, post, grad in heads:
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                outs.append(net(x, post))
        return outs
    wb: list[torch.Tensor] = []
    for f, (_, _, grad) in zip(firsts, heads, strict=True):
        wb += [f.weight, f.bias] if grad else [f.weight.detach(), f.bias.detach()]
    flat = x.reshape(rows, x.shape[-1])
    step = NormMLP.CPU_ROWS if x.device.type == "cpu" and rows > 2 * NormMLP.CPU_ROWS else max(rows, 1)
    parts: list[list[torch.Tensor]] = [[] for _ in heads]
    for piece in flat.split(step):
        firsts_out = _SharedInputLinear.apply(piece, *wb)
        for k, ((net, post, grad), y) in enumerate(zip(heads, firsts_out, strict=True)):
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                y = run_layers(tuple(net)[1:], y if grad else y.detach())
                parts[k].append(y if post is None else post(y))
    outs = []
    for p in parts:
        out = p[0] if len(p) == 1 else torch.cat(p)
        outs.append(out.view(*x.shape[:-1], *out.shape[1:]))
    return outs


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


__all__ = ["NormMLP", "dense", "norm_mlp", "norm_mlps", "trunc_normal_in_"]
