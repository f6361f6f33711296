"""LaProp (Ziyin et al. 2020) and adaptive gradient clipping: DreamerV3's one optimiser (Nature version).

LaProp normalises each gradient by its running RMS *before* the momentum average (Adam does it after), so
the step size stays bounded however small the RMS gets; with eps 1e-20 that is what keeps tiny gradients
(e.g. of a 1M-parameter model early on) from stalling or exploding. AGC clips every tensor's gradient to
``clip`` times the tensor's norm, so no single layer can take a step large relative to its own weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def adaptive_clip_(params: Iterable[torch.nn.Parameter], clip: float, pmin: float = 1e-3) -> None:
    """Scale each parameter's gradient in place so that ||g|| <= clip * max(pmin, ||p||)."""
    ps = [p for p in params if p.grad is not None]
    if not ps or clip <= 0:
        return
    grads = [p.grad for p in ps]
    gnorm = torch.stack(torch._foreach_norm(grads))
    pnorm = torch.stack(torch._foreach_norm(ps))
    factors = 1.0 / torch.clamp(gnorm / (clip * torch.clamp(pnorm, min=pmin)), min=1.0)
    torch._foreach_mul_(grads, list(factors.unbind()))


class LaProp(torch.optim.Optimizer):
    """nu <- b2 nu + (1 - b2) g^2;  u = g / (sqrt(nu / (1 - b2^t)) + eps);  m <- b1 m + (1 - b1) u;
    p <- p - lr m / (1 - b1^t)."""

    def __init__(self, params, lr: float = 4e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-20):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"LaProp: bad lr {lr}, betas {betas} or eps {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            b1, b2 = group["betas"]
            for p in ps:
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["nu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["mu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            t = self.state[ps[0]]["step"] + 1
            for p in ps:
                self.state[p]["step"] = t
            grads = [p.grad for p in ps]
            nus = [self.state[p]["nu"] for p in ps]
            mus = [self.state[p]["mu"] for p in ps]
            torch._foreach_mul_(nus, b2)
            torch._foreach_addcmul_(nus, grads, grads, 1.0 - b2)
            denom = torch._foreach_div(nus, 1.0 - b2 ** t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            upd = torch._foreach_div(grads, denom)
            torch._foreach_lerp_(mus, upd, 1.0 - b1)
            torch._foreach_add_(ps, mus, alpha=-group["lr"] / (1.0 - b1 ** t))
        return loss


__all__ = ["LaProp", "adaptive_clip_"]
