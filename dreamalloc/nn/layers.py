"""MLPs, initialisation and action masking.

``mlp`` is the one constructor of fully connected stacks (Lim & Maddukuri's [32, 32] ReLU Q-net, the PPO
torsos); ``masked_logits`` is the one place invalid actions are excluded, so no agent can sample them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "elu": nn.ELU}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, activation: str = "relu",
        layer_norm: bool = False) -> nn.Sequential:
    """Linear layers of widths ``hidden`` with ``activation`` (and optional LayerNorm) between them; a final
    linear layer to ``out_dim`` unless it is None (then the output is the last hidden layer)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    d = int(in_dim)
    for h in hidden:
        layers.append(nn.Linear(d, int(h)))
        if layer_norm:
            layers.append(nn.LayerNorm(int(h)))
        layers.append(ACTIVATIONS[activation]())
        d = int(h)
    if out_dim is not None:
        layers.append(nn.Linear(d, int(out_dim)))
    return nn.Sequential(*layers)


def orthogonal_init(module: nn.Module, gain: float = 2 ** 0.5, last_gain: float | None = None) -> nn.Module:
    """Orthogonal weights and zero biases for every Linear layer (the PPO convention); ``last_gain`` for
    the final one (e.g. 0.01 for a policy head, 1.0 for a value head)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        g = last_gain if (last_gain is not None and i == len(linears) - 1) else gain
        nn.init.orthogonal_(m.weight, g)
        nn.init.zeros_(m.bias)
    return module


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits (or Q-values) with invalid actions at the dtype's lowest value. A row with no valid action
    keeps its logits unchanged (the env then answers with its invalid-action penalty)."""
    if mask is None:
        return logits
    mask = mask.to(torch.bool)
    any_valid = mask.any(-1, keepdim=True)
    return torch.where(mask | ~any_valid, logits, torch.finfo(logits.dtype).min)
