"""A replay of per-env step sequences that also stores the model's latent state at every step.

Each env writes its own ring of ``capacity`` records; a record is one observation with what led into it:

    obs_t, action_{t-1} (-1 at an episode's first step), reward_{t-1 -> t}, is_first, is_terminal, is_last,
    action mask of obs_t, and the RSSM state (deter, stoch) *before* obs_t was seen.

An episode that ends gets one more record for its final observation (reward, terminal flag, is_last), so the
world model sees every transition, including the ones that end episodes. Storing the latent before each step
is DreamerV3's replay context: a training sequence starts from the latent of the step before its first one
instead of from zeros, and after every update the fresh posteriors are written back (``write_latents``).

Memory follows the data: the rings start ``initial`` records deep and double (copying what they hold) until they
reach ``capacity``, so a short run holds what it wrote, not ``capacity`` records of 2,048-wide latents. A ring
wraps only once it is ``capacity`` deep, so growing never reorders anything. The stored latents are compact:
``latent_dtype`` for the deterministic state (float32 by default, which keeps training numbers exactly those of
a float32 replay; bfloat16 / float16 halve the largest part of a record) and the smallest integer type that
holds a class index for the stochastic one (exact). A state dict holds the rings at their present depth, in
their storage dtypes, so resuming continues bit for bit.
"""

from __future__ import annotations

import torch

LATENT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INITIAL_RECORDS = 1024  # per env, before the first doubling


def class_dtype(classes: int) -> torch.dtype:
    """The smallest integer dtype that holds a class index in [0, classes)."""
    return torch.uint8 if classes <= 256 else torch.int16 if classes <= 32768 else torch.long


class SequenceReplay:
    KEYS = ("obs", "prev_action", "reward", "first", "terminal", "last", "mask", "deter", "stoch")

    def __init__(self, envs: int, capacity: int, obs_dim: int, n_actions: int, deter: int, stoch: int,
                 device, masked: bool = False, action_dims: int | None = None, classes: int = 1 << 62,
                 latent_dtype: str = "float32", initial: int = INITIAL_RECORDS):
        """``n_actions``: width of an action mask; ``action_dims``: D for multi-discrete actions ([D] integers
        per record), None for one integer; ``classes``: classes per stochastic latent (sets the index dtype);
        ``latent_dtype``: storage of the deterministic latent (float32 | bfloat16 | float16); ``initial``:
        records per env allocated at first (the rings double from there up to ``capacity``)."""
        if latent_dtype not in LATENT_DTYPES:
            raise ValueError(f"replay latent dtype must be one of {', '.join(LATENT_DTYPES)}, got {latent_dtype!r}")
        self.B, self.C, self.device = int(envs), int(capacity), torch.device(device)
        self.dims = {"obs": int(obs_dim), "n_actions": int(n_actions), "deter": int(deter), "stoch": int(stoch),
                     "action_dims": None if action_dims is None else int(action_dims)}
        self.masked, self.latent_dtype = bool(masked), latent_dtype
        self.stoch_dtype = class_dtype(int(classes))
        self.rows = 0  # records per env allocated now (<= C)
        self._allocate(min(self.C, max(1, int(initial))))
        self.written = torch.zeros(self.B, dtype=torch.long, device=self.device)  # records ever written, per env

    def _allocate(self, rows: int) -> None:
        """Rings ``rows`` records deep, holding what the present ones hold (the first ``self.rows`` columns)."""
        B, dev, d = self.B, self.device, self.dims
        f32, flag = dict(dtype=torch.float32, device=dev), dict(dtype=torch.bool, device=dev)
        act = (B, rows) if d["action_dims"] is None else (B, rows, d["action_dims"])
        new = {"obs": torch.zeros(B, rows, d["obs"], **f32),
               "prev_action": torch.full(act, -1, dtype=torch.long, device=dev),
               "reward": torch.zeros(B, rows, **f32),
               "first": torch.zeros(B, rows, **flag), "terminal": torch.zeros(B, rows, **flag),
               "last": torch.zeros(B, rows, **flag),
               "mask": torch.ones(B, rows, d["n_actions"], **flag) if self.masked else None,
               "deter": torch.zeros(B, rows, d["deter"], dtype=LATENT_DTYPES[self.latent_dtype], device=dev),
               "stoch": torch.zeros(B, rows, d["stoch"], dtype=self.stoch_dtype, device=dev)}  # class indices
        keep = min(self.rows, rows)
        for k, t in new.items():
            if t is not None and keep:
                t[:, :keep] = getattr(self, k)[:, :keep]
            setattr(self, k, t)
        self.rows = rows

    def nbytes(self) -> int:
        """Bytes the rings hold now."""
        return sum(getattr(self, k).nbytes for k in self.KEYS if getattr(self, k) is not None)

    def __len__(self) -> int:
        return int(self.written.clamp(max=self.C).sum())

    def add(self, rows: torch.Tensor, obs, prev_action, reward, first, terminal, last, mask, deter, stoch) -> None:
        """One record for each env in ``rows`` [R] (stoch given one-hot [R, S, K] or as indices [R, S])."""
        if rows.numel() == 0:
            return
        if self.rows < self.C:
            need = int(self.written[rows].max()) + 1
            if need > self.rows:  # still short of capacity, so nothing has wrapped: grow in place
                self._allocate(min(self.C, max(2 * self.rows, need)))
        col = self.written[rows] % self.C
        self.obs[rows, col] = obs
        self.prev_action[rows, col] = prev_action
        self.reward[rows, col] = reward.float()
        self.first[rows, col] = first
        self.terminal[rows, col] = terminal
        self.last[rows, col] = last
        if self.mask is not None:
            self.mask[rows, col] = True if mask is None else mask.to(torch.bool)
        self.deter[rows, col] = deter.to(self.deter.dtype)
        self.stoch[rows, col] = (stoch.argmax(-1) if stoch.dim() == 3 else stoch).to(self.stoch_dtype)
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
        out["deter"], out["stoch"] = out["deter"].float(), out["stoch"].long()
        out.update(env=env, cols=cols, offset=offset, size=size)
        return out

    def write_latents(self, sample: dict, deter: torch.Tensor, stoch: torch.Tensor) -> None:
        """Store the posterior after step t of a sampled window [batch, T, ...] as the latent before step
        t + 1, where that step exists in the buffer."""
        offset = sample["offset"] + 1
        ok = offset < sample["size"].unsqueeze(1)
        rows = sample["env"].unsqueeze(1).expand_as(offset)[ok]
        cols = (sample["cols"] + 1)[ok] % self.C
        self.deter[rows, cols] = deter.detach()[ok].to(self.deter.dtype)
        self.stoch[rows, cols] = stoch.detach().argmax(-1)[ok].to(self.stoch_dtype)

    def state_dict(self) -> dict:
        """The rings at their present depth, in their storage dtypes, with the capacity they may grow to."""
        return {"written": self.written, "capacity": self.C, **{k: getattr(self, k) for k in self.KEYS}}

    def load_state_dict(self, state: dict) -> None:
        """Rings as deep as the saved ones (older states, without ``capacity``, were always full depth)."""
        self.C = int(state.get("capacity", self.C))
        rows = int(state["obs"].shape[1])
        if rows != self.rows:
            self.rows = 0
            self._allocate(rows)
        self.written.copy_(state["written"])
        for k in self.KEYS:
            if getattr(self, k) is not None and state.get(k) is not None:
                getattr(self, k).copy_(state[k])  # copy_ converts an older state's float32 / int64 latents


__all__ = ["SequenceReplay"]
