"""A replay of per-env step sequences that also stores the model's latent state at every step.

Each env writes its own ring of ``capacity`` records; a record is one observation with what led into it:

    obs_t, action_{t-1} (-1 at an episode's first step), reward_{t-1 -> t}, is_first, is_terminal, is_last,
    action mask of obs_t, and the RSSM state (deter, stoch) *before* obs_t was seen.

An episode that ends gets one more record for its final observation (reward, terminal flag, is_last), so the
world model sees every transition, including the ones that end episodes. Storing the latent before each step
is DreamerV3's replay context: a training sequence starts from the latent of the step before its first one
instead of from zeros, and after every update the fresh posteriors are written back (``write_latents``).
"""

from __future__ import annotations

import torch


class SequenceReplay:
    KEYS = ("obs", "prev_action", "reward", "first", "terminal", "last", "mask", "deter", "stoch")

    def __init__(self, envs: int, capacity: int, obs_dim: int, n_actions: int, deter: int, stoch: int,
                 device, masked: bool = False, action_dims: int | None = None):
        """``n_actions``: width of an action mask; ``action_dims``: D for multi-discrete actions ([D] integers
        per record), None for one integer."""
        self.B, self.C, self.device = int(envs), int(capacity), torch.device(device)
        f32 = dict(dtype=torch.float32, device=self.device)
        flag = dict(dtype=torch.bool, device=self.device)
        B, C = self.B, self.C
        self.obs = torch.zeros(B, C, obs_dim, **f32)
        shape = (B, C) if action_dims is None else (B, C, int(action_dims))
        self.prev_action = torch.full(shape, -1, dtype=torch.long, device=self.device)
        self.reward = torch.zeros(B, C, **f32)
        self.first = torch.zeros(B, C, **flag)
        self.terminal = torch.zeros(B, C, **flag)
        self.last = torch.zeros(B, C, **flag)
        self.mask = torch.ones(B, C, n_actions, **flag) if masked else None
        self.deter = torch.zeros(B, C, deter, **f32)
        self.stoch = torch.zeros(B, C, stoch, dtype=torch.long, device=self.device)  # class index per latent
        self.written = torch.zeros(B, dtype=torch.long, device=self.device)  # records ever written, per env

    def __len__(self) -> int:
        return int(self.written.clamp(max=self.C).sum())

    def add(self, rows: torch.Tensor, obs, prev_action, reward, first, terminal, last, mask, deter, stoch) -> None:
        """One record for each env in ``rows`` [R] (stoch given one-hot [R, S, K] or as indices [R, S])."""
        if rows.numel() == 0:
            return
        col = self.written[rows] % self.C
        self.obs[rows, col] = obs
        self.prev_action[rows, col] = prev_action
        self.reward[rows, col] = reward.float()
        self.first[rows, col] = first
        self.terminal[rows, col] = terminal
        self.last[rows, col] = last
        if self.mask is not None:
            self.mask[rows, col] = True if mask is None else mask.to(torch.bool)
        self.deter[rows, col] = deter.float()
        self.stoch[rows, col] = stoch.argmax(-1) if stoch.dim() == 3 else stoch
        self.written[rows] += 1

    def can_sample(self, length: int) -> bool:
        return bool((self.written >= length).any())

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> dict:
        """``batch`` windows of ``length`` consecutive records, uniformly over the envs that hold one and
        over start positions; returns [batch, length, ...] tensors plus the window's (env, columns)."""
        ok = (self.written >= length).nonzero().squeeze(1)
        pick = torch.randint(0, ok.numel(), (batch,), generator=generator, device=self.device)
        env = ok[pick]
        size = self.written[env].clamp(max=self.C)
        oldest = (self.written[env] - size) % self.C
        start = (torch.rand(batch, generator=generator, device=self.device) * (size - length + 1)).long()
        offset = start.unsqueeze(1) + torch.arange(length, device=self.device)  # [batch, T] from the oldest
        cols = (oldest.unsqueeze(1) + offset) % self.C
        rows = env.unsqueeze(1).expand_as(cols)
        out = {k: getattr(self, k)[rows, cols] for k in self.KEYS if getattr(self, k) is not None}
        out.update(env=env, cols=cols, offset=offset, size=size)
        return out

    def write_latents(self, sample: dict, deter: torch.Tensor, stoch: torch.Tensor) -> None:
        """Store the posterior after step t of a sampled window [batch, T, ...] as the latent before step
        t + 1, where that step exists in the buffer."""
        offset = sample["offset"] + 1
        ok = offset < sample["size"].unsqueeze(1)
        rows = sample["env"].unsqueeze(1).expand_as(offset)[ok]
        cols = (sample["cols"] + 1)[ok] % self.C
        self.deter[rows, cols] = deter.detach().float()[ok]
        self.stoch[rows, cols] = stoch.detach().argmax(-1)[ok]

    def state_dict(self) -> dict:
        return {"written": self.written, **{k: getattr(self, k) for k in self.KEYS}}

    def load_state_dict(self, state: dict) -> None:
        self.written.copy_(state["written"])
        for k in self.KEYS:
            if getattr(self, k) is not None and state.get(k) is not None:
                getattr(self, k).copy_(state[k])


__all__ = ["SequenceReplay"]
