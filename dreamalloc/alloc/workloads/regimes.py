"""Hidden lifetime regimes: one size law, block lifetimes whose law switches at hidden points of an episode.

``RegimeStream`` ("regimes") is made for adaptation inside an episode. Every request size comes from one
size law (the pattern family's size parameters: ``size_dist``, ``size_min``, ``size_max``, ``classes``, ...), so
a request says nothing about the regime; what changes at a switch is how long the blocks live:

* a regime is ``{name, life, dist, by_size}``: each block gets a lifetime when it is placed, drawn from the
  regime active then: ``dist="fixed"`` (exactly its mean: blocks die in birth order, a queue),
  ``"exponential"`` (memoryless: any live block may die next), ``"uniform"`` (on [0, 2 x mean]);
  ``by_size`` = beta makes the mean depend on the block's size, proportional to (size / mean size) ** beta
  (beta > 0: large blocks live longer; < 0: small ones do), normalised so that the expected cell-time of a
  request, E[size x lifetime], stays ``life`` x mean size. Same size law and same ``life`` then give the same
  load (live cells, by Little's law), so regimes differ only in *which* blocks die when: the free pattern
  that decides which placement rule fragments least;
* each request frees the live block whose death time has come (earliest first), else allocates;
* time is the heap's request clock (``HeapBatch.clock``: allocation requests, placed or dropped, so with the
  env's ``on_fail="drop"`` a full heap does not stop the clock);
* segments: the first regime is ``regimes[0]`` (``order="cycle"``) or drawn (``order="random"``); a segment lasts
  ``at`` requests (an integer or [lo, hi], drawn per segment from the heap's (seed, episode) stream); then the
  next regime starts: the next in the list (cycle), or one of the others drawn uniformly (random). Blocks
  keep the lifetime they were given at birth, so one death table serves every regime and nothing leaks
  across a switch.

``task_id`` (the regime issuing each heap's pending request) and ``segment`` (switches so far) are reported
by the env in ``info`` for analysis and for the switching oracle; agents do not observe them.
"""

from __future__ import annotations

import math

import torch

from dreamalloc.alloc.workloads.base import ALLOC, FREE, Requests, RequestStream
from dreamalloc.alloc.workloads.families import PatternStream
from dreamalloc.alloc.workloads.params import FLOAT, checked, optional
from dreamalloc.alloc.workloads.shift import _segment
from dreamalloc.core.rng import CounterRNG

LIFE_DISTS = ("fixed", "exponential", "uniform")
ORDERS = ("cycle", "random")
SIZE_PARAMS = ("size_dist", "size_units", "size_min", "size_max", "classes", "class_probs", "tail_p", "alpha")
REGIME_KEYS = ("name", "life", "dist", "by_size")


def _regime(i: int, r) -> dict:
    where = f"regimes[{i}]"
    if not isinstance(r, dict) or "life" not in r:
        raise ValueError(f"{where} must be a mapping with at least 'life' (keys: {', '.join(REGIME_KEYS)}), "
                         f"got {r!r}")
    unknown = sorted(set(r) - set(REGIME_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; valid: {', '.join(REGIME_KEYS)}")
    life, beta = r["life"], r.get("by_size", 0.0)
    for k, v in (("life", life), ("by_size", beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}.{k} must be a finite number, got {v!r}")
    if life <= 0:
        raise ValueError(f"{where}.life must be > 0 (mean lifetime in requests), got {life!r}")
    dist = r.get("dist", "exponential")
    if dist not in LIFE_DISTS:
        raise ValueError(f"{where}.dist must be one of {', '.join(LIFE_DISTS)}, got {dist!r}")
    name = r.get("name", f"{dist}{life:g}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string, got {name!r}")
    return {"name": name, "life": float(life), "dist": dist, "by_size": float(beta)}


class RegimeStream(RequestStream):
    """Lifetime regimes switching at hidden points (see the module docstring); registered as ``"regimes"``."""

    SWITCHES_IN_EPISODE = True
    SALT = 29
    CELL_BYTES = 8  # the death times
    PARAMS = {**{k: PatternStream.PARAMS[k] for k in SIZE_PARAMS},
              "regimes": checked("a list of regimes {name, life, dist, by_size}"),
              "at": checked("an integer >= 1 or [lo, hi]"), "order": checked(f"one of {', '.join(ORDERS)}"),
              "max_life": optional(FLOAT)}

    def __init__(self, batch, cells, device="cpu", *, regimes=(), at=64, order: str = "cycle",
                 max_life: float | None = None, size_dist: str = "uniform", size_units: str = "cells",
                 size_min: float | None = None, size_max: float | None = None, classes=None, class_probs=None,
                 tail_p: float = 0.5, alpha: float = 1.5):
        size_params = dict(size_dist=size_dist, size_units=size_units, size_min=size_min, size_max=size_max,
                           classes=classes, class_probs=class_probs, tail_p=tail_p, alpha=alpha)
        super().__init__(batch, cells, device)
        if isinstance(regimes, (str, dict)) or len(regimes) < 1:
            raise ValueError(f"regimes must be a non-empty list of {{name, life, dist, by_size}}, got {regimes!r}")
        self.regimes = [_regime(i, r) for i, r in enumerate(regimes)]
        names = [r["name"] for r in self.regimes]
        if len(set(names)) != len(names):
            raise ValueError(f"regime names must be distinct, got {names}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if order == "random" and len(self.regimes) < 2:
            raise ValueError("order='random' needs at least two regimes to switch between")
        self.order = order
        self.lo, self.hi = _segment(at)
        sizes = PatternStream(1, cells, "cpu", **size_params)  # compiles and checks the size law
        dev = self.device
        self.size_cdf, self._top = sizes.size_cdf.to(dev), sizes._top
        s = torch.arange(1, cells + 1, dtype=torch.float64)
        pmf, mean = sizes.size_pmf.double(), sizes.mean_size
        self.mean_size = mean
        # life(size) = life * (size / mean) ** beta * mean / E[S (S / mean) ** beta]: the expected cell-time of a
        # request, E[size x life], is life x mean size whatever beta (the same load, by Little's law)
        table = []
        for r in self.regimes:
            f = (s / mean) ** r["by_size"]
            table.append(r["life"] * f * mean / float((pmf * s * f).sum()))
        self.life_of = torch.stack(table).to(dev)  # [R, cells]: mean lifetime of a block of each size
        self.max_life = math.inf if max_life is None else float(max_life)
        if self.max_life <= 0:
            raise ValueError(f"max_life must be > 0, got {max_life!r}")
        self.dist_code = torch.tensor([LIFE_DISTS.index(r["dist"]) for r in self.regimes], device=dev)
        B, N = self.batch, self.cells
        self.rng = CounterRNG(B, dev)
        self.death = torch.full((B, N), math.inf, dtype=torch.float64, device=dev)
        self.seen = torch.full((B,), -1, dtype=torch.long, device=dev)  # last block_seq given a death
        self.current = torch.zeros(B, dtype=torch.long, device=dev)
        self.task_id = torch.zeros(B, dtype=torch.long, device=dev)
        self.segment = torch.zeros(B, dtype=torch.long, device=dev)
        self.switch_at = torch.zeros(B, dtype=torch.long, device=dev)

    @property
    def names(self) -> list[str]:
        return [r["name"] for r in self.regimes]

    FOREVER = 10 ** 12  # a segment length no episode reaches: the stream keeps its first regime

    @classmethod
    def tasks_of(cls, params):
        regimes = params.get("regimes") if isinstance(params, dict) else None
        if not isinstance(regimes, (list, tuple)):
            return None
        return [("regimes", {**params, "regimes": [r], "at": cls.FOREVER, "order": "cycle"}) for r in regimes]

    def _draw_segment(self, rows: torch.Tensor) -> torch.Tensor:
        return self.rng.integers(rows, self.lo, self.hi) if self.hi > self.lo else torch.full_like(rows, self.lo)

    def _next_regime(self, rows: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        R = len(self.regimes)
        if self.order == "cycle":
            return (cur + 1) % R
        step = 1 + (self.rng.uniform(rows) * (R - 1)).long().clamp(max=R - 2)  # one of the others, uniformly
        return (cur + step) % R

    def reset(self, heaps, rows, seed, episode):
        self.rng.reseed(rows, seed, episode, self.SALT)
        self.death[rows] = math.inf
        self.seen[rows] = -1
        self.segment[rows] = 0
        R = len(self.regimes)
        first = torch.zeros_like(rows) if self.order == "cycle" else \
            (self.rng.uniform(rows) * R).long().clamp(max=R - 1)
        self.current[rows] = first
        self.task_id[rows] = first
        self.switch_at[rows] = heaps.clock(rows) + self._draw_segment(rows)

    def next(self, heaps, rows):
        t = heaps.clock(rows)
        u_size, u_life = self.rng.uniforms(rows, 2).unbind(1)
        # the block placed at the previous request gets its death time from the regime it was born under
        newest = torch.where(heaps.live[rows], heaps.block_seq[rows], -1)
        nseq, nslot = newest.max(1)
        new = (nseq >= 0) & (nseq == t - 1) & (nseq > self.seen[rows])
        if new.any():
            r, slot = rows[new], nslot[new]
            reg = self.current[r]
            mean = self.life_of[reg, heaps.block_size[r, slot] - 1]
            code = self.dist_code[reg]
            u = u_life[new]
            life = torch.where(code == 0, mean, torch.where(code == 1, -mean * torch.log1p(-u), 2.0 * mean * u))
            self.death[r, slot] = t[new].double() + life.clamp(max=self.max_life)
            self.seen[r] = nseq[new]
        # a switch at this request: the next regime takes over from here
        done = t >= self.switch_at[rows]
        if done.any():
            r = rows[done]
            self.current[r] = self._next_regime(r, self.current[r])
            self.segment[r] += 1
            self.switch_at[r] = t[done] + self._draw_segment(r)
        self.task_id[rows] = self.current[rows]
        d = torch.where(heaps.live[rows], self.death[rows], math.inf)
        dmin, block = d.min(1)
        free = (heaps.n_live[rows] > 0) & (dmin <= t.double())
        size = torch.searchsorted(self.size_cdf, u_size.contiguous(), right=True).clamp(max=self._top) + 1
        return Requests(torch.where(free, FREE, ALLOC), torch.where(free, 0, size), torch.where(free, block, -1))

    def state_dict(self):
        return {"rng": self.rng.state_dict(), "death": self.death.clone(), "seen": self.seen.clone(),
                "current": self.current.clone(), "task_id": self.task_id.clone(), "segment": self.segment.clone(),
                "switch_at": self.switch_at.clone()}

    def load_state_dict(self, state):
        self.rng.load_state_dict(state["rng"])
        for k in ("death", "seen", "current", "task_id", "segment", "switch_at"):
            getattr(self, k).copy_(state[k])


__all__ = ["LIFE_DISTS", "ORDERS", "RegimeStream"]
