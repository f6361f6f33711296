"""Parameterised request-pattern families: one vectorised, seeded stream ("pattern") whose size
distribution, lifetime model and program phase are named parameters.

Clock. Every time-like parameter (``life``, ``phase_len``) counts *allocations*: the heap's request clock
(``HeapBatch.clock``: allocation requests since the episode began; the successful allocations ``n_allocs``
unless the env drops requests that fit nowhere, ``on_fail="drop"``, when dropped requests count too). The env
asks for requests right after each allocation, so "a block lives ``life`` requests" means it is freed right
after the ``life``-th allocation that follows its own.

Sizes (``size_dist``), in cells or, with ``size_units="fraction"``, as fractions of the heap that are
scaled to cells, rounded and clipped to [1, cells]. Every distribution is compiled at construction into a
probability table over the sizes 1..cells and sampled by inverse CDF, so the sampled law is exact:

* ``"uniform"``: integer uniform on [size_min, size_max];
* ``"classes"``: a mixture of size classes ``classes=[s1, s2, ...]`` with ``class_probs`` (default uniform;
  two classes = bimodal, k = k-modal);
* ``"geometric"``: size_min - 1 + Geometric(``tail_p``) on {1, 2, ...}, truncated (conditioned) to
  [size_min, size_max]: P(s) proportional to (1 - tail_p) ** (s - size_min);
* ``"powerlaw"``: discrete Pareto on [size_min, size_max]: P(s) proportional to s ** -``alpha``.

Lifetimes (``lifetime``):

* ``"prob"``: each request frees a live block with probability ``free_prob`` (Lim & Maddukuri's model),
  the block picked by ``order``: ``"random"`` (uniform), ``"fifo"`` (oldest), ``"lifo"`` (newest);
* ``"fixed"``: every block is freed exactly ``life`` (an integer >= 1) allocations after its own;
* ``"exponential"``: each block's lifetime is drawn Exponential(mean ``life``) when the stream first sees
  it; whenever the earliest death time among live blocks is <= the allocation count, that block is freed
  first. Death times live in a [B, cells] tensor indexed by (heap, slot).

Phases (``phase``, Wilson et al.'s program profiles), with ``phase_len`` allocations:

* ``"none"``: the lifetime model throughout;
* ``"ramp"``: grow (no frees at all) for the first ``phase_len`` allocations, then the lifetime model
  (blocks whose death time passed during the ramp are freed at its end, one per request);
* ``"peak"``: grow for ``phase_len`` allocations, then a run of frees (blocks picked by ``order``) until
  live cells <= ``peak_keep`` * cells, then the lifetime model;
* ``"plateau"``: cycles of 2 * ``phase_len`` allocations: grow for ``phase_len`` allocations, then hold
  for ``phase_len``: a block (picked by ``order``) is freed whenever live cells exceed ``plateau_level`` *
  cells, else the request allocates. The level controller replaces the lifetime model, so the profile is
  a sawtooth of growth spurts above a plateau.

Whatever the model, a heap with nothing live always allocates. Each heap's draws come from its own
counter-based stream keyed by (seed, episode), four uniforms per request, so heap b of a batch sees what
a batch of one seeded like it sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dreamalloc.alloc.workloads.base import ALLOC, FREE, Requests, RequestStream
from dreamalloc.alloc.workloads.params import FLOAT, INT, checked, list_of, optional
from dreamalloc.core.rng import CounterRNG

SIZE_DISTS = ("uniform", "classes", "geometric", "powerlaw")
SIZE_UNITS = ("cells", "fraction")
LIFETIMES = ("prob", "fixed", "exponential")
ORDERS = ("random", "fifo", "lifo")
PHASES = ("none", "ramp", "peak", "plateau")

_DEFAULT_SIZES = {"cells": (1, 5), "fraction": (0.01, 0.05)}


def _choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _number(name: str, value, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok or math.isnan(v):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must lie in {rng}, got {value!r}")
    return v


def _integer(name: str, value, lo: int) -> int:
    integral = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if not integral or int(value) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


class PatternStream(RequestStream):
    """Parameterised request patterns (see the module docstring); registered as ``"pattern"``.

    Defaults: size_dist="uniform", size_units="cells", size_min=1, size_max=5 (fraction: 0.01, 0.05),
    classes=None, class_probs=None (uniform), tail_p=0.5, alpha=1.5, lifetime="prob", free_prob=0.4,
    order="random", life=20, phase="none", phase_len=100, peak_keep=0.1, plateau_level=0.5.
    """

    SALT = 23
    CELL_BYTES = 8  # per heap and cell: the death times (validation.env_footprint counts them)
    PARAMS = {"size_dist": checked(f"one of {', '.join(SIZE_DISTS)}"),
              "size_units": checked(f"one of {', '.join(SIZE_UNITS)}"), "size_min": optional(FLOAT),
              "size_max": optional(FLOAT), "classes": optional(list_of(FLOAT)), "class_probs": optional(list_of(FLOAT)),
              "tail_p": FLOAT, "alpha": FLOAT, "lifetime": checked(f"one of {', '.join(LIFETIMES)}"),
              "free_prob": FLOAT, "order": checked(f"one of {', '.join(ORDERS)}"), "life": FLOAT,
              "phase": checked(f"one of {', '.join(PHASES)}"), "phase_len": INT, "peak_keep": FLOAT,
              "plateau_level": FLOAT}  # sizes are numbers: cells or fractions (size_units); ranges checked below

    def __init__(self, batch, cells, device="cpu", *, size_dist: str = "uniform", size_units: str = "cells",
                 size_min: float | None = None, size_max: float | None = None,
                 classes: Sequence[float] | None = None, class_probs: Sequence[float] | None = None,
                 tail_p: float = 0.5, alpha: float = 1.5, lifetime: str = "prob", free_prob: float = 0.4,
                 order: str = "random", life: float = 20, phase: str = "none", phase_len: int = 100,
                 peak_keep: float = 0.1, plateau_level: float = 0.5):
        super().__init__(batch, cells, device)
        N = self.cells
        self.size_dist = _choice("size_dist", size_dist, SIZE_DISTS)
        self.size_units = _choice("size_units", size_units, SIZE_UNITS)
        self.lifetime = _choice("lifetime", lifetime, LIFETIMES)
        self.order = _choice("order", order, ORDERS)
        self.phase = _choice("phase", phase, PHASES)
        d_min, d_max = _DEFAULT_SIZES[self.size_units]
        if self.size_units == "cells":
            d_max = min(d_max, N)
        smin = self._size("size_min", d_min if size_min is None else size_min)
        smax = self._size("size_max", d_max if size_max is None else size_max)
        if smin > smax:
            raise ValueError(f"size_min must be <= size_max, got size_min={size_min}, size_max={size_max} "
                             f"({smin} > {smax} cells)")
        self.size_min, self.size_max = smin, smax
        self.tail_p = _number("tail_p", tail_p, 0.0, 1.0, lo_open=True)
        self.alpha = _number("alpha", alpha, 0.0, math.inf, lo_open=True, hi_open=True)
        self.free_prob = _number("free_prob", free_prob, 0.0, 1.0)
        if self.lifetime == "fixed":
            self.life = float(_integer("life", life, 1))
        else:
            self.life = _number("life", life, 0.0, math.inf, lo_open=True, hi_open=True)
        self.phase_len = _integer("phase_len", phase_len, 1)
        self.peak_keep = _number("peak_keep", peak_keep, 0.0, 1.0)
        self.plateau_level = _number("plateau_level", plateau_level, 0.0, 1.0)

        pmf = torch.zeros(N, dtype=torch.float64)  # pmf[s - 1] = P(size s)
        s = torch.arange(1, N + 1, dtype=torch.float64)
        rng_mask = (s >= smin) & (s <= smax)
        if self.size_dist == "classes":
            if classes is None or isinstance(classes, str) or len(classes) == 0:
                raise ValueError(f"classes must be a non-empty list of sizes for size_dist='classes', "
                                 f"got {classes!r}")
            cls = [self._size(f"classes[{i}]", c) for i, c in enumerate(classes)]
            if class_probs is None:
                probs = [1.0 / len(cls)] * len(cls)
            else:
                if isinstance(class_probs, str) or len(class_probs) != len(cls):
                    raise ValueError(f"class_probs must have one probability per class ({len(cls)}), "
                                     f"got {class_probs!r}")
                probs = [_number(f"class_probs[{i}]", p, 0.0, 1.0) for i, p in enumerate(class_probs)]
                if abs(sum(probs) - 1.0) > 1e-6:
                    raise ValueError(f"class_probs must sum to 1 (within 1e-6), got sum {sum(probs)!r}")
            for c, p in zip(cls, probs, strict=True):
                pmf[c - 1] += p
            self.classes, self.class_probs = cls, probs
        else:
            if classes is not None or class_probs is not None:
                raise ValueError(f"classes / class_probs are only used with size_dist='classes', "
                                 f"not {self.size_dist!r}")
            self.classes, self.class_probs = None, None
            if self.size_dist == "uniform":
                pmf = rng_mask.double()
            elif self.size_dist == "geometric":
                q = 1.0 - self.tail_p
                pmf = torch.where(rng_mask, q ** (s - smin).clamp(min=0), 0.0) if q > 0 else (s == smin).double()
            else:
                pmf = torch.where(rng_mask, s.pow(-self.alpha), 0.0)
        pmf = pmf / pmf.sum()
        cdf = pmf.cumsum(0)
        top = int(pmf.nonzero().max())
        cdf[top:] = 1.0
        self.size_pmf = pmf.to(self.device)
        self.size_cdf = cdf.to(self.device)
        self._top = top  # index of the largest size with positive probability

        B = self.batch
        self.rng = CounterRNG(B, self.device)
        self.death = torch.full((B, N), math.inf, dtype=torch.float64, device=self.device)
        self.seen = torch.full((B,), -1, dtype=torch.long, device=self.device)  # last block_seq given a death
        self.drain = torch.zeros(B, dtype=torch.long, device=self.device)  # peak: 0 before, 1 during, 2 after

    # ----------------------------------------------------------------------------------------------
    def _size(self, name: str, value) -> int:
        """A size parameter in cells: integers in [1, cells], or fractions in (0, 1] scaled and clipped."""
        if self.size_units == "fraction":
            f = _number(name, value, 0.0, 1.0, lo_open=True)
            return int(min(max(round(f * self.cells), 1), self.cells))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
                or not 1 <= int(value) <= self.cells:
            raise ValueError(f"{name} must be an integer number of cells in [1, {self.cells}] "
                             f"(or use size_units='fraction'), got {value!r}")
        return int(value)

    @property
    def mean_size(self) -> float:
        """The exact mean of the request-size law, in cells."""
        s = torch.arange(1, self.cells + 1, dtype=torch.float64, device=self.device)
        return float((self.size_pmf * s).sum())

    def reset(self, heaps, rows, seed, episode):
        self.rng.reseed(rows, seed, episode, self.SALT)
        self.death[rows] = math.inf
        self.seen[rows] = -1
        self.drain[rows] = 0

    def _pick(self, heaps, rows, u_block):
        """The live slot that ``order`` frees in each row (meaningful where the row has live blocks)."""
        if self.order == "random":
            k = (u_block * heaps.n_live[rows]).long().clamp(max=heaps.cells - 1)
            return heaps.perm[rows, k]
        live = heaps.live[rows]
        if self.order == "fifo":
            return torch.where(live, heaps.block_seq[rows], torch.iinfo(torch.long).max).argmin(1)
        return torch.where(live, heaps.block_seq[rows], -1).argmax(1)

    def next(self, heaps, rows):
        u_op, u_block, u_size, u_life = self.rng.uniforms(rows, 4).unbind(1)
        n, t, used = heaps.n_live[rows], heaps.clock(rows), heaps.used[rows]
        has = n > 0
        N = heaps.cells

        if self.lifetime == "prob":
            base = (u_op < self.free_prob) & has
            base_block = self._pick(heaps, rows, u_block)
        else:
            # give the newest block its death time the first time we see it
            newest = torch.where(heaps.live[rows], heaps.block_seq[rows], -1)
            nseq, nslot = newest.max(1)
            new = (nseq >= 0) & (nseq == t - 1) & (nseq > self.seen[rows])
            if new.any():
                life = torch.full_like(u_life, self.life) if self.lifetime == "fixed" else \
                    -self.life * torch.log1p(-u_life)
                r = rows[new]
                self.death[r, nslot[new]] = t[new].double() + life[new]
                self.seen[r] = nseq[new]
            d = torch.where(heaps.live[rows], self.death[rows], math.inf)
            dmin, base_block = d.min(1)
            base = has & (dmin <= t.double())

        free, block = base, base_block
        if self.phase != "none":
            if self.phase == "plateau":
                grow = (t % (2 * self.phase_len)) < self.phase_len
                ctrl = ~grow
                ctrl_free = used > self.plateau_level * N
            else:
                grow = t < self.phase_len
                ctrl = torch.zeros_like(grow)
                ctrl_free = ctrl
                if self.phase == "peak":
                    dr = self.drain[rows]
                    dr = torch.where(~grow & (dr == 0), 1, dr)
                    over = used > self.peak_keep * N
                    dr = torch.where((dr == 1) & ~over, 2, dr)
                    self.drain[rows] = dr
                    ctrl = dr == 1
                    ctrl_free = over
            if ctrl.any():
                ctrl_block = base_block if self.lifetime == "prob" else self._pick(heaps, rows, u_block)
                free = torch.where(ctrl, ctrl_free & has, free)
                block = torch.where(ctrl, ctrl_block, block)
            free = free & ~grow

        idx = torch.searchsorted(self.size_cdf, u_size.contiguous(), right=True).clamp(max=self._top)
        size = idx + 1
        return Requests(torch.where(free, FREE, ALLOC), torch.where(free, 0, size), torch.where(free, block, -1))

    def state_dict(self):
        return {"rng": self.rng.state_dict(), "death": self.death.clone(), "seen": self.seen.clone(),
                "drain": self.drain.clone()}

    def load_state_dict(self, state):
        self.rng.load_state_dict(state["rng"])
        self.death.copy_(state["death"])
        self.seen.copy_(state["seen"])
        self.drain.copy_(state["drain"])


__all__ = ["LIFETIMES", "ORDERS", "PHASES", "SIZE_DISTS", "SIZE_UNITS", "PatternStream"]
