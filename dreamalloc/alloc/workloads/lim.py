"""Lim & Maddukuri's (2024) request streams, as specified in docs/reference.md section 1.

random ("dist"): each request frees a uniformly chosen live block with probability ``free_prob``, else
allocates a size uniform in [size_min, size_max]; with nothing live it allocates.
bf-good / wf-good: scripted sequences that only best fit / worst fit survive, then the random stream.
mixed: two sequences drawn from {bf-good, wf-good}, everything freed between them, then the random stream.
"""

from __future__ import annotations

import numpy as np
import torch

from dreamalloc.alloc.workloads.base import (
    ALLOC,
    FREE,
    S_ALLOC,
    S_FREE_ALL,
    S_FREE_OLDEST,
    Requests,
    RequestStream,
    Script,
    ScriptedStream,
)
from dreamalloc.alloc.workloads.params import RANDOM_PARAMS
from dreamalloc.core.rng import CounterRNG


class RandomStream(RequestStream):
    SALT = 1
    PARAMS = RANDOM_PARAMS

    def __init__(self, batch, cells, device="cpu", free_prob: float = 0.4, size_min: int = 1,
                 size_max: int = 5):
        super().__init__(batch, cells, device)
        if not 0.0 <= float(free_prob) < 1.0:
            raise ValueError(f"free_prob must lie in [0, 1), got {free_prob}")
        if not 1 <= int(size_min) <= int(size_max) <= self.cells:
            raise ValueError(f"request sizes need 1 <= size_min <= size_max <= cells ({self.cells}), "
                             f"got size_min={size_min}, size_max={size_max}")
        self.free_prob, self.size_min, self.size_max = float(free_prob), int(size_min), int(size_max)
        self.rng = CounterRNG(self.batch, self.device)

    def reset(self, heaps, rows, seed, episode):
        self.rng.reseed(rows, seed, episode, self.SALT)

    def next(self, heaps, rows):
        u_op, u_block, u_size = self.rng.uniforms(rows, 3).unbind(1)
        n = heaps.n_live[rows]
        is_free = (u_op < self.free_prob) & (n > 0)
        k = (u_block * n).long().clamp(max=heaps.cells - 1)
        block = torch.where(is_free, heaps.perm[rows, k], -1)
        size = self.size_min + (u_size * (self.size_max - self.size_min + 1)).long()
        return Requests(torch.where(is_free, FREE, ALLOC), torch.where(is_free, 0, size), block)

    def state_dict(self):
        return self.rng.state_dict()

    def load_state_dict(self, state):
        self.rng.load_state_dict(state)


def pick(rng: np.random.Generator, values) -> int:
    """One of ``values``, uniformly: the very draw ``int(rng.choice(values))`` makes (``choice`` without
    probabilities draws ``rng.integers(0, len(values))``; tests/test_fast_env.py checks this), at a tenth of the
    cost (choice converts the list to an array first); scripts are drawn at every episode's start. Any other
    object with a ``choice`` method (a scripted stand-in in tests) is asked for its choice."""
    if type(rng) is np.random.Generator:
        return int(values[int(rng.integers(0, len(values)))])
    return int(rng.choice(values))


def bf_good_script(rng: np.random.Generator, cells: int) -> Script:
    """One big block, small blocks until the next would leave less than ``big`` free, a pad leaving
    exactly big - 1 free, free the big (oldest) block, allocate 1, allocate big: only best fit puts the 1
    into the small hole and keeps the big hole whole."""
    big = cells // pick(rng, (2, 3, 4, 5))
    smalls = [cells // m for m in (10, 20, 30, 50, 100, 200) if m < cells]
    script: Script = [(S_ALLOC, big)]
    used = big
    while smalls:
        s = pick(rng, smalls)
        if cells - used - s < big:
            break
        script.append((S_ALLOC, s))
        used += s
    script.append((S_ALLOC, cells - used - big + 1))
    script += [(S_FREE_OLDEST, 0), (S_ALLOC, 1), (S_ALLOC, big)]
    return script


def wf_good_script(rng: np.random.Generator, cells: int) -> Script:
    """Big blocks of cells/{8,9,10} while more than cells//2.5 stays free, a pad down to cells//2.5,
    then free the big blocks oldest first, allocating a block of 1-3 after each of the first k in {1,2,3}
    frees, and finally allocate the sum of the big blocks: only worst fit keeps the small blocks out of the
    region the big blocks leave."""
    bigs = [cells // r for r in (8, 9, 10)]
    section = cells // 2.5  # floor division, as in their code: the pad below is then always >= 1
    free = cells
    script: Script = []
    n_big = 0
    while True:
        s = pick(rng, bigs)
        if free - s <= section:
            break
        script.append((S_ALLOC, s))
        free -= s
        n_big += 1
    script.append((S_ALLOC, int(free - section)))
    n_small = pick(rng, (1, 2, 3))
    for i in range(n_big):
        script.append((S_FREE_OLDEST, 0))
        if i < n_small:
            script.append((S_ALLOC, pick(rng, (1, 2, 3))))
    script.append((S_ALLOC, cells - free))
    return script


MIN_ADVERSARIAL_CELLS = 20


class _LimScripted(ScriptedStream):
    PARAMS = RANDOM_PARAMS  # the random stream's, for the continuation

    def __init__(self, batch, cells, device="cpu", **random_kwargs):
        if int(cells) < MIN_ADVERSARIAL_CELLS:
            raise ValueError(f"{type(self).NAME} needs a heap of at least {MIN_ADVERSARIAL_CELLS} cells, "
                             f"got {cells}")
        super().__init__(batch, cells, device, then=RandomStream(batch, cells, device, **random_kwargs))


class BfGoodStream(_LimScripted):
    NAME = "bf-good"

    def script(self, rng):
        return bf_good_script(rng, self.cells)


class WfGoodStream(_LimScripted):
    NAME = "wf-good"

    def script(self, rng):
        return wf_good_script(rng, self.cells)


class MixedStream(_LimScripted):
    NAME = "mixed"

    def script(self, rng):
        both = (bf_good_script(rng, self.cells), wf_good_script(rng, self.cells))
        first, second = (int(i) for i in rng.integers(0, 2, size=2))
        return both[first] + [(S_FREE_ALL, 0)] + both[second]


__all__ = ["BfGoodStream", "FREE", "MixedStream", "RandomStream", "WfGoodStream", "bf_good_script",
           "wf_good_script"]
