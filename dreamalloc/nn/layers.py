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
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


def choosable(mask: torch.Tensor) -> torch.Tensor:
    """The actions a policy may pick under an action mask [..., A]: the valid ones, or every action of a row
    that has no valid one (the env then answers with its invalid-action penalty)."""
    mask = mask.to(torch.bool)
    return mask | ~mask.any(-1, keepdim=True)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits (or Q-values) with the actions ``choosable`` leaves out at the dtype's lowest value (a row with no
    valid action keeps its logits unchanged)."""
    if mask is None:
        return logits
    return torch.where(choosable(mask), logits, torch.finfo(logits.dtype).min)


class PointerHead(nn.Module):
    """Policy logits scored per action from the features the observation holds for each action (a pointer
    network's additive attention, Vinyals et al. 2015): logit_a = v . tanh(W h + U [f_a, g_a] + p_a) for a
    in 0..A-1, where h is the torso's state, f_a the ``width`` features of action a (``obs[..., offset + a *
    width: offset + (a + 1) * width]``, ``EnvSpec.action_features``), g_a the same features rescaled to
    [0, 1] over the valid actions of the row (min-max; 0.5 where they are all equal), so an extreme (the
    largest, the smallest) is plain whatever the features' scale, and p_a a learnt per-position embedding (an
    action's index can still matter). One set of weights scores every action."""

    def __init__(self, in_dim: int, n_actions: int, offset: int, width: int, units: int = 64):
        super().__init__()
        self.n, self.offset, self.width = int(n_actions), int(offset), int(width)
        self.query = orthogonal_init(nn.Linear(in_dim, units), 1.0)
        self.key = orthogonal_init(nn.Linear(2 * self.width, units, bias=False), 1.0)
        self.pos = nn.Parameter(torch.zeros(self.n, units))
        self.out = orthogonal_init(nn.Linear(units, 1, bias=False), 0.01)

    def features(self, obs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[..., A, 2 width]: each action's raw features and their min-max rescaling over the valid actions."""
        f = obs[..., self.offset: self.offset + self.n * self.width].unflatten(-1, (self.n, self.width))
        valid = (torch.ones(f.shape[:-1], dtype=torch.bool, device=f.device) if mask is None
                 else mask.to(torch.bool)).unsqueeze(-1)
        big = torch.finfo(f.dtype).max
        lo = torch.where(valid, f, big).amin(-2, keepdim=True)
        hi = torch.where(valid, f, -big).amax(-2, keepdim=True)
        span = hi - lo
        g = torch.where(span > 0, (f - lo) / span.clamp(min=torch.finfo(f.dtype).tiny), 0.5).clamp(0.0, 1.0)
        return torch.cat([f, g], -1)

    def forward(self, h: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [..., A] from the state h [..., H], the observation [..., D] and the action mask [..., A]
        (None: every action valid); invalid actions are not masked here (``masked_logits`` does that)."""
        z = torch.tanh(self.query(h).unsqueeze(-2) + self.key(self.features(obs, mask)) + self.pos)
        return self.out(z).squeeze(-1)
