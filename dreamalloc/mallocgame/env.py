"""The batched memory-mapping game on torch tensors: B programs placed buffer by buffer, stepping together.

Dynamics. A row holds one program (an ``Instance``: buffers with live ranges ``[start, end)``, sizes and
benefits, in game order) and a fast memory of ``capacity`` units. Step k decides buffer k. The buffers that
already sit in fast memory and are live at some time of buffer k's live range cut the address range
``[0, capacity)`` into free gaps; a gap is *feasible* when buffer k fits in it. Action ``g < K`` places the
buffer at the bottom of the g-th feasible gap in address order (the first K of them); action ``K`` leaves it
in slow memory. The mask (``info["action_mask"]``) allows the first ones that exist and always "slow". A
masked gap sends the buffer to slow memory and sets the step's ``info["invalid"]`` (``invalid_action:
error`` raises a ``ValueError`` instead).
Placements are final: no moves, no evictions, no prefetches (a buffer lives in one memory its whole life).

Reward: the buffer's benefit when it goes to fast memory, else 0; divided by the program's total benefit with
``normalize_reward`` (the default), so a return is the fraction of the upper bound "everything in fast memory"
that a placement reaches. The episode terminates after the program's last buffer.

Observation (``11 + 3K + addr_bins`` floats): the buffer's size / capacity, benefit / the program's largest,
live-range length and start / the program's horizon, progress k / n, the fraction of the total benefit still
undecided, the total size of the undecided buffers that overlap its live range / capacity (the demand still to
come) and the size of the placed ones that do / capacity, the largest undecided one that does / capacity,
their benefit / (theirs + this buffer's), d / (1 + d) with d this buffer's benefit per unit of size / the
program's; then per gap slot
(valid, bottom / capacity, length / capacity); then the occupancy of ``addr_bins`` equal address bins by the
placed buffers live with it.

Randomness (counter-based, ``core.rng``): a row seeded s draws its trial's task from (s, trial) and its
episode's program (or synthetic instance) from (s, episode), so a row of a batch equals a single env seeded
the same, on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dreamalloc.core.actions import ActionSpec
from dreamalloc.core.rng import CounterRNG
from dreamalloc.core.trials import Trials
from dreamalloc.mallocgame.config import SYNTHETIC, MallocGameConfig, task_pool
from dreamalloc.mallocgame.instances import Instance

INST_SALT, TASK_SALT = 0x3A770C, 0x7A5C3A77
FAR = 1 << 60  # "no address" / "never"


class MallocGameDomain:
    """The dynamics of B memory-mapping games (a ``core.DomainCore``); ``MallocGameCore`` adds episodes, trials
    and the RL^2 inputs."""

    action_space = "gap"  # recorded in checkpoints' meta
    masked = True

    def __init__(self, num_envs: int, cfg: MallocGameConfig, device="cpu"):
        self.cfg = cfg
        self.B, self.G = int(num_envs), cfg.n_gaps  # G, not K: the trials wrapper owns K
        self.device = dev = torch.device(device)
        self.obs_dim, self.n_actions, self.n_tasks = cfg.base_obs_dim, cfg.n_actions, cfg.n_tasks
        names = tuple(f"gap{g}" for g in range(self.G)) + ("slow",)
        self.action_spec = ActionSpec(self.n_actions, self.B, dev, "env",
                                      f"Discrete({self.n_actions}) (a feasible gap, or {self.G}: slow memory)", names)
        self._build_tables()
        # every feature is >= 0; fractions <= 1, sums over the program's buffers (demand, occupancy) <= N
        high = [1.0] * 6 + [float(self.N)] * 2 + [1.0] * (3 + 3 * self.G) + [float(self.N)] * cfg.addr_bins
        self.obs_high = torch.tensor(high, dtype=torch.float32, device=dev)
        B, N = self.B, self.N
        i64, f64 = dict(dtype=torch.long, device=dev), dict(dtype=torch.float64, device=dev)
        self.start_t, self.end_t, self.size = (torch.zeros(B, N, **i64) for _ in range(3))
        self.benefit = torch.zeros(B, N, **f64)
        self.n, self.cap, self.horizon = (torch.ones(B, **i64) for _ in range(3))
        self.off = torch.full((B, N), -1, **i64)  # bottom address in fast memory; -1: slow or undecided
        self.placed = torch.zeros(B, N, dtype=torch.bool, device=dev)
        self.k = torch.zeros(B, **i64)  # the buffer to decide
        self.got, self.total = torch.zeros(B, **f64), torch.ones(B, **f64)
        self.task_id, self.instance = torch.zeros(B, **i64), torch.full((B,), -1, **i64)
        self.ended = torch.ones(B, dtype=torch.bool, device=dev)
        self.rng = CounterRNG(B, dev)
        self._g = None

    @property
    def max_episode_steps(self) -> int:
        return self.N

    def _build_tables(self) -> None:
        """Every task's instance pool as padded tensors, and the synthetic laws."""
        cfg, dev = self.cfg, self.device
        pools = [task_pool(t) for t in cfg.tasks]
        self.instances: list[Instance] = [inst for p in pools if p for inst in p]
        n_syn = [int({**SYNTHETIC, **t["params"]}["n_buffers"]) for t, p in zip(cfg.tasks, pools, strict=True)
                 if p is None]
        self.N = N = max([i.n for i in self.instances] + n_syn + [1])
        n_inst = max(len(self.instances), 1)
        st, en, sz = (np.zeros((n_inst, N), np.int64) for _ in range(3))
        be = np.zeros((n_inst, N), np.float64)
        n, cap = np.ones(n_inst, np.int64), np.ones(n_inst, np.int64)
        for j, inst in enumerate(self.instances):
            m = inst.n
            st[j, :m], en[j, :m], sz[j, :m], be[j, :m] = inst.start, inst.end, inst.size, inst.benefit
            n[j], cap[j] = m, inst.capacity
        t = lambda x: torch.as_tensor(x, device=dev)
        self.P_start, self.P_end, self.P_size, self.P_benefit, self.P_n, self.P_cap = map(t, (st, en, sz, be, n, cap))
        T = len(cfg.tasks)
        first, sizes = [], []
        pos = 0
        for p in pools:
            first.append(pos)
            sizes.append(len(p) if p else 0)
            pos += len(p) if p else 0
        self.pool_first, self.pool_len = t(np.array(first, np.int64)), t(np.array(sizes, np.int64))
        self.cycle = t(np.array([t_["params"].get("draw", "random") == "cycle" for t_ in cfg.tasks]))
        law = np.zeros((T, len(SYNTHETIC)))
        for j, (task, p) in enumerate(zip(cfg.tasks, pools, strict=True)):
            if p is None:
                law[j] = [float({**SYNTHETIC, **task["params"]}[k]) for k in SYNTHETIC]
        self.law = t(law)
        w = torch.tensor([t_["weight"] for t_ in cfg.tasks], dtype=torch.float64)
        self.cdf = (w.cumsum(0) / w.sum()).to(dev)

    # ----------------------------------------------------------------------------------------------
    def start(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, trial: torch.Tensor) -> None:
        """New episodes in ``rows``: the trial's task from (seed, trial), the program from (seed, episode)."""
        self._g = None
        self.rng.reseed(rows, seed, trial, TASK_SALT)
        tid = torch.searchsorted(self.cdf, self.rng.uniform(rows), right=True).clamp(max=len(self.cdf) - 1)
        self.task_id[rows] = tid
        self.rng.reseed(rows, seed, episode, INST_SALT)
        u = self.rng.uniform(rows)
        plen = self.pool_len[tid]
        pick = torch.where(self.cycle[tid], (seed + episode) % plen.clamp(min=1), (u * plen).long())
        idx = (self.pool_first[tid] + pick.clamp(max=(plen - 1).clamp(min=0))).clamp(max=self.P_n.numel() - 1)
        pooled = plen > 0
        self.instance[rows] = torch.where(pooled, idx, -1)
        for name in ("start_t", "end_t", "size", "benefit"):
            getattr(self, name)[rows] = getattr(self, "P_" + name.removesuffix("_t"))[idx]
        self.n[rows], self.cap[rows] = self.P_n[idx], self.P_cap[idx]
        syn = rows[~pooled]
        if syn.numel():
            self._synthesize(syn, tid[~pooled])
        r = rows
        N = self.N
        valid = torch.arange(N, device=self.device)[None, :] < self.n[r, None]
        self.benefit[r] = self.benefit[r] * valid
        self.horizon[r] = torch.where(valid, self.end_t[r], 0).max(1).values.clamp(min=1)
        self.total[r] = self.benefit[r].sum(1).clamp(min=1e-300)
        self.off[r] = -1
        self.placed[r] = False
        self.k[r] = 0
        self.got[r] = 0.0
        self.ended[r] = False

    def _synthesize(self, rows: torch.Tensor, tid: torch.Tensor) -> None:
        """A random program per row from its task's law (draws continue the (seed, episode) stream)."""
        N, dev = self.N, self.device
        law = self.law[tid]  # [n, 7] in SYNTHETIC's key order
        nb, H, md, scale, sigma, uses, frac = law.unbind(1)
        u = self.rng.uniforms(rows, 5 * N).view(-1, N, 5)
        start = (u[..., 0] * H[:, None]).floor()
        dur = 1.0 + (-md[:, None] * torch.log1p(-u[..., 1])).floor()
        end = torch.minimum(start + dur, H[:, None])
        normal = torch.sqrt(-2.0 * torch.log1p(-u[..., 2])) * torch.cos(2.0 * math.pi * u[..., 3])
        size = (scale[:, None] * torch.exp(sigma[:, None] * normal)).clamp(max=1e9).ceil().clamp(min=1.0)
        benefit = size * (1.0 + (u[..., 4] * uses[:, None]).floor())
        valid = torch.arange(N, device=dev)[None, :] < nb[:, None]
        start, end = start.long(), end.long()
        size = torch.where(valid, size.long(), 0)
        start = torch.where(valid, start, FAR)
        end = torch.where(valid, end, FAR + 1)
        benefit = torch.where(valid, benefit, 0.0)
        order = torch.sort(2 ** 31 - size, dim=1, stable=True).indices  # larger first, then index
        start, end, size, benefit = (x.gather(1, order) for x in (start, end, size, benefit))
        order = torch.sort(start, dim=1, stable=True).indices  # by start: (start, -size, index)
        start, end, size, benefit = (x.gather(1, order) for x in (start, end, size, benefit))
        Hmax = int(H.max())
        tt = torch.arange(Hmax, device=dev)[None, :, None]
        live = ((start[:, None, :] <= tt) & (tt < end[:, None, :])) * size[:, None, :]
        peak = live.sum(2).max(1).values
        cap = torch.maximum((frac * peak.double()).floor().long(), size.max(1).values).clamp(min=1)
        self.start_t[rows], self.end_t[rows] = torch.where(start >= FAR, 0, start), torch.where(start >= FAR, 1, end)
        self.size[rows], self.benefit[rows] = size.clamp(min=1), benefit
        self.n[rows], self.cap[rows] = nb.long(), cap

    # ----------------------------------------------------------------------------------------------
    def gaps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first K feasible gaps of every row's current buffer: (bottom [B, K], length [B, K], valid [B, K])."""
        if self._g is not None:
            return self._g
        B, N, K, dev = self.B, self.N, self.G, self.device
        ar = torch.arange(B, device=dev)
        i = self.k.clamp(max=N - 1)
        cs, ce, csz = self.start_t[ar, i], self.end_t[ar, i], self.size[ar, i]
        active = self.placed & (self.end_t > cs[:, None]) & (self.start_t < ce[:, None])
        lo, hi = self.off, self.off + self.size
        C = self.cap[:, None]
        cand = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), hi], 1)  # a gap's bottom is 0 or a top
        ok = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=dev), active], 1)
        a3, lo3, hi3, c3 = active[:, None, :], lo[:, None, :], hi[:, None, :], cand[:, :, None]
        ok &= ~(a3 & (lo3 <= c3) & (c3 < hi3)).any(2) & (cand < C)
        nxt = torch.where(a3 & (lo3 >= c3), lo3, C[:, :, None]).min(2).values
        length = nxt - cand
        fits = ok & (length >= csz[:, None]) & ~self.ended[:, None]
        key, order = torch.where(fits, cand, FAR).sort(1)
        dup = torch.zeros_like(fits)
        dup[:, 1:] = key[:, 1:] == key[:, :-1]
        key = torch.where(dup, FAR, key)
        length = length.gather(1, order)
        key, order = key.sort(1)
        length = length.gather(1, order)
        if key.shape[1] < K:
            pad = K - key.shape[1]
            key = torch.cat([key, torch.full((B, pad), FAR, dtype=torch.long, device=dev)], 1)
            length = torch.cat([length, torch.zeros(B, pad, dtype=torch.long, device=dev)], 1)
        valid = key[:, :K] < FAR
        self._g = (torch.where(valid, key[:, :K], 0), torch.where(valid, length[:, :K], 0), valid)
        return self._g

    def step(self, a: torch.Tensor):
        """Decide every row's current buffer: ``a < K`` places it at the bottom of feasible gap ``a``, ``K``
        leaves it in slow memory."""
        bottom, _, valid = self.gaps()
        B, N, K = self.B, self.N, self.G
        ar = torch.arange(B, device=self.device)
        live = ~self.ended
        place = (a < K) & live
        ac = a.clamp(max=K - 1)
        bad = place & ~valid[ar, ac]
        if bool(bad.any()):
            if self.cfg.invalid_action == "error":
                r = int(bad.nonzero()[0, 0])
                raise ValueError(f"masked action: env {r} chose gap {int(a[r])} but its buffer has only "
                                 f"{int(valid[r].sum())} feasible gap(s); take actions allowed by "
                                 f"info['action_mask'] ({K} = slow memory is always allowed)")
            place = place & ~bad  # invalid_action: slow, the buffer goes to slow memory
        i = self.k.clamp(max=N - 1)
        pr, pi = ar[place], i[place]
        self.off[pr, pi] = bottom[ar, ac][place]
        self.placed[pr, pi] = True
        gain = torch.where(place, self.benefit[ar, i], 0.0)
        self.got += gain
        reward = gain / self.total if self.cfg.normalize_reward else gain
        self.k = torch.where(live, self.k + 1, self.k)
        last = live & (self.k >= self.n)
        self.ended |= last
        self._g = None
        return reward, last, torch.zeros_like(last), {"invalid": bad}

    # ----------------------------------------------------------------------------------------------
    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        bottom, length, valid = self.gaps()
        B, N, dev = self.B, self.N, self.device
        ar = torch.arange(B, device=dev)
        i = self.k.clamp(max=N - 1)
        C = self.cap.double()
        cs, ce = self.start_t[ar, i], self.end_t[ar, i]
        idx = torch.arange(N, device=dev)[None, :]
        inrow = idx < self.n[:, None]
        overlap = (self.end_t > cs[:, None]) & (self.start_t < ce[:, None]) & inrow
        undecided = inrow & (idx > self.k[:, None])
        active = self.placed & overlap
        sz = self.size.double()
        H = self.horizon.double()
        future = (self.benefit * (undecided & overlap)).sum(1)
        density = (self.benefit[ar, i] / self.size[ar, i]) / (self.total / (sz * inrow).sum(1))
        feats = torch.stack([
            self.size[ar, i] / C, self.benefit[ar, i] / self.benefit.max(1).values.clamp(min=1e-300),
            (ce - cs) / H, cs / H, self.k / self.n.double(),
            (self.benefit * (inrow & (idx >= self.k[:, None]))).sum(1) / self.total,
            (sz * (undecided & overlap)).sum(1) / C, (sz * active).sum(1) / C,
            (sz * (undecided & overlap)).max(1).values / C, future / (future + self.benefit[ar, i]).clamp(min=1e-300),
            density / (1.0 + density)], 1)
        nb = self.cfg.addr_bins
        edges = torch.linspace(0.0, 1.0, nb + 1, dtype=torch.float64, device=dev)[None, :] * C[:, None]  # [B, nb+1]
        lo = torch.where(active, self.off, 0).double()[:, :, None]
        hi = torch.where(active, self.off + self.size, 0).double()[:, :, None]
        cover = (torch.minimum(hi, edges[:, None, 1:]) - torch.maximum(lo, edges[:, None, :-1])).clamp(min=0).sum(1)
        occ = cover / (edges[:, 1:] - edges[:, :-1])
        gaps = torch.cat([valid.double(), bottom / C[:, None], length / C[:, None]], 1)
        obs = torch.minimum(torch.cat([feats, gaps, occ], 1).float(), self.obs_high)
        obs = obs.masked_fill(self.ended[:, None], 0.0)
        return obs if rows is None else obs[rows]

    def info(self) -> dict:
        bottom, length, valid = self.gaps()
        mask = torch.cat([valid, torch.ones(self.B, 1, dtype=torch.bool, device=self.device)], 1)
        return {"action_mask": mask, "gap_bottom": bottom, "gap_length": length, "task_id": self.task_id.clone(),
                "instance": self.instance.clone(), "buffer": self.k.clone(), "capacity": self.cap.clone(),
                "fast_benefit": self.got.clone(), "benefit_fraction": self.got / self.total,
                "fast_buffers": self.placed.sum(1)}

    def placement(self, row: int = 0) -> dict:
        """Row ``row``'s program and the placement so far, as numpy (for pictures and solvers' checks)."""
        m = int(self.n[row])
        f = lambda x: x[row, :m].cpu().numpy()
        return {"start": f(self.start_t), "end": f(self.end_t), "size": f(self.size), "benefit": f(self.benefit),
                "offset": np.where(f(self.placed), f(self.off), -1), "capacity": int(self.cap[row])}

    # ----------------------------------------------------------------------------------------------
    _STATE = ("start_t", "end_t", "size", "benefit", "n", "cap", "horizon", "off", "placed", "k", "got", "total",
              "task_id", "instance", "ended")

    def state_dict(self) -> dict:
        """Everything needed to continue these games exactly (for checkpoints)."""
        return {**{"mg_" + k: getattr(self, k).clone() for k in self._STATE}, "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in self._STATE if "mg_" + k not in state]
        if missing:
            raise KeyError(f"mallocgame state without {missing}: it was not written by a MallocGameCore")
        for k in self._STATE:
            t = getattr(self, k)
            if tuple(state["mg_" + k].shape) != tuple(t.shape):
                raise ValueError(f"mallocgame state {k!r} has shape {tuple(state['mg_' + k].shape)}, this env "
                                 f"{tuple(t.shape)}: written by an env with other num_envs or programs")
            t.copy_(state["mg_" + k])
        self.rng.load_state_dict(state["rng"])
        self._g = None


class MallocGameCore(Trials):
    """B memory-mapping games: ``MallocGameDomain`` inside the trials component; tensors in, tensors out."""

    def __init__(self, num_envs: int, config: MallocGameConfig | None = None, device="cpu",
                 autoreset: bool = True, **overrides):
        cfg = MallocGameConfig.from_kwargs(config, **overrides).validate()
        super().__init__(MallocGameDomain(num_envs, cfg, device), cfg.trial_episodes, cfg.meta_obs, cfg.task_obs,
                         autoreset, unit="env")


__all__ = ["MallocGameCore", "MallocGameDomain"]
