"""Lim & Maddukuri's bf-good / wf-good / mixed scripts drawn in compiled code, number for number the scripts of
``workloads/lim.py``: those draw from ``core.rng.numpy_generator(seed, episode, salt)`` (numpy's SeedSequence
feeding a PCG64 Generator) with ``Generator.integers``; this module implements that chain in numba (SeedSequence's
entropy pool and state words, PCG64's 128-bit LCG with the XSL-RR output and its buffered 32-bit draws, Lemire's
bounded integers as numpy draws them) and the two scripts on top, so a batched restart draws its scripts without a
Python loop. ``tests/test_jit_env.py`` compares every stage with numpy and every script with ``lim.py``'s over
many seeds, episodes and heap sizes; the Python scripts stay the definition.
"""

from __future__ import annotations

import numpy as np

from dreamalloc.alloc.workloads.base import S_ALLOC, S_FREE_ALL, S_FREE_OLDEST
from dreamalloc.alloc.workloads.lim import BfGoodStream, MixedStream, WfGoodStream

try:
    import numba
except ImportError:  # pragma: no cover - the caller (jit.py) checks AVAILABLE first
    numba = None

AVAILABLE = numba is not None
KINDS = {BfGoodStream: 1, WfGoodStream: 2, MixedStream: 3}  # exact classes: a subclass may change its script
_SCRIPTS = {cls: cls.__dict__["script"] for cls in KINDS}  # as defined in lim.py (a test may patch one)


def script_kind(stream) -> int:
    """1 / 2 / 3 for Lim's bf-good / wf-good / mixed stream (exactly those classes, their own scripts), 0 for
    any other."""
    cls = type(stream)
    return KINDS[cls] if AVAILABLE and cls in KINDS and cls.__dict__.get("script") is _SCRIPTS[cls] else 0


class ScriptDrawer:
    """Compiled draws of one stream's scripts for a few rows at a time, with the scratch they need (sized on
    first use): ``drawer(kind, seeds, episodes)`` -> (ops [R, cap], sizes [R, cap], lengths [R]), views valid until
    the next call."""

    def __init__(self, salt: int, cells: int):
        self.salt, self.cells, self.cap = int(salt), int(cells), max_script_len(cells)
        self._rows = 0

    def __call__(self, kind: int, seeds: np.ndarray, episodes: np.ndarray):
        R = len(seeds)
        if R > self._rows:
            self._rows = max(R, 64 if R > 1 else 1)
            self._ops = np.zeros((self._rows, self.cap), np.int64)
            self._sizes = np.zeros((self._rows, self.cap), np.int64)
            self._len = np.zeros(self._rows, np.int64)
            self._work, self._tmp = work_arrays(self.cap)
        draw(kind, seeds.astype(np.int64, copy=False), episodes.astype(np.int64, copy=False), self.salt,
             self.cells, self._ops[:R], self._sizes[:R], self._len[:R], self._work, self._tmp)
        return self._ops[:R], self._sizes[:R], self._len[:R]


def max_script_len(cells: int) -> int:
    """An upper bound on a script's length: bf-good has at most cells + 5 steps (its small blocks are >= 1 cell),
    wf-good at most 31 (under 10 big blocks: each is >= cells // 10 and they leave 40 % free); mixed plays one of
    them twice at most, with one FREE_ALL between."""
    return 2 * int(cells) + 64


if numba is not None:
    _jit = numba.njit(cache=True, nogil=True, _nrt=False)
    _inline = numba.njit(cache=True, nogil=True, inline="always", _nrt=False)
    _U32 = np.uint64(0xFFFFFFFF)
    _U64 = np.uint64
    # SeedSequence (numpy/random/bit_generator.pyx: pool of 4 words, hashmix / mix constants)
    _INIT_A, _MULT_A = np.uint64(0x43B0D7E5), np.uint64(0x931E8875)
    _INIT_B, _MULT_B = np.uint64(0x8B51F9DD), np.uint64(0x58F38DED)
    _MIX_L, _MIX_R = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)
    # PCG64's default 128-bit multiplier, as two 64-bit halves
    _MUL_HI, _MUL_LO = np.uint64(0x2360ED051FC65DA4), np.uint64(0x4385DF649FCCF645)

    @_inline
    def _hashmix(value, h):
        """(mixed value, next hash constant): all in 32 bits, held in uint64."""
        value = (value ^ h[0]) & _U32
        h[0] = (h[0] * _MULT_A) & _U32
        value = (value * h[0]) & _U32
        return value ^ (value >> _U64(16))

    @_inline
    def _mix(x, y):
        r = (_MIX_L * x - _MIX_R * y) & _U32
        return r ^ (r >> _U64(16))

    @_inline
    def _mulhi(a, b):
        """The high 64 bits of the 128-bit product of two uint64."""
        a_lo, a_hi, b_lo, b_hi = a & _U32, a >> _U64(32), b & _U32, b >> _U64(32)
        lo_lo = a_lo * b_lo
        mid1 = a_hi * b_lo + (lo_lo >> _U64(32))
        mid2 = a_lo * b_hi + (mid1 & _U32)
        return a_hi * b_hi + (mid1 >> _U64(32)) + (mid2 >> _U64(32))

    @_inline
    def _step(g):
        """PCG64's LCG step on g = [state_hi, state_lo, inc_hi, inc_lo, has_uint32, uinteger]."""
        s_hi, s_lo = g[0], g[1]
        hi = _mulhi(s_lo, _MUL_LO) + s_lo * _MUL_HI + s_hi * _MUL_LO
        lo = s_lo * _MUL_LO
        new_lo = lo + g[3]
        g[0] = hi + g[2] + (_U64(1) if new_lo < lo else _U64(0))
        g[1] = new_lo

    @_inline
    def _next64(g):
        _step(g)
        x = g[0] ^ g[1]
        rot = g[0] >> _U64(58)
        return (x >> rot) | (x << ((_U64(64) - rot) & _U64(63)))

    @_inline
    def _next32(g):
        if g[4] != 0:
            g[4] = 0
            return g[5]
        v = _next64(g)
        g[4] = 1
        g[5] = v >> _U64(32)
        return v & _U32

    @_inline
    def _integers(g, n):
        """``Generator.integers(0, n)`` for 1 <= n < 2^32: Lemire's bounded draw on the buffered 32-bit stream."""
        rng = _U64(n - 1)
        if rng == 0:
            return 0
        if rng == _U32:
            return np.int64(_next32(g))
        excl = rng + _U64(1)
        m = _next32(g) * excl
        left = m & _U32
        if left < excl:
            thresh = (_U32 - rng) % excl
            while left < thresh:
                m = _next32(g) * excl
                left = m & _U32
        return np.int64(m >> _U64(32))

    @_inline
    def _words(x, out, k):
        """numpy's int -> uint32 words (little end first; 0 is one word): appended to out from k."""
        if x == 0:
            out[k] = 0
            return k + 1
        while x != _U64(0):
            out[k] = x & _U32
            x = x >> _U64(32)
            k += 1
        return k

    @_inline
    def _seed(g, seed, episode, salt, ent, pool):
        """g <- the PCG64 state of numpy_generator(seed, episode, salt)."""
        n = _words(_U64(seed), ent, 0)
        n = _words(_U64(episode), ent, n)
        n = _words(_U64(salt), ent, n)
        while n < 4:
            ent[n] = 0
            n += 1
        h = pool[4:5]  # the hash constant lives in pool[4]
        h[0] = _INIT_A
        for i in range(4):
            pool[i] = _hashmix(ent[i], h)
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    pool[dst] = _mix(pool[dst], _hashmix(pool[src], h))
        for src in range(4, n):
            for dst in range(4):
                pool[dst] = _mix(pool[dst], _hashmix(ent[src], h))
        hb = _INIT_B
        for i in range(8):  # generate_state(4, uint64): 8 words of 32 bits, the pool cycled
            v = (pool[i % 4] ^ hb) & _U32
            hb = (hb * _MULT_B) & _U32
            v = (v * hb) & _U32
            ent[i] = v ^ (v >> _U64(16))
        # seed = (words 0-1, 2-3) as uint64 (high half, low half); inc = (words 4-5, 6-7)
        seed_hi, seed_lo = ent[0] | (ent[1] << _U64(32)), ent[2] | (ent[3] << _U64(32))
        inc_hi, inc_lo = ent[4] | (ent[5] << _U64(32)), ent[6] | (ent[7] << _U64(32))
        g[2] = (inc_hi << _U64(1)) | (inc_lo >> _U64(63))
        g[3] = (inc_lo << _U64(1)) | _U64(1)
        g[0], g[1] = _U64(0), _U64(0)
        _step(g)
        lo = g[1] + seed_lo
        g[0] = g[0] + seed_hi + (_U64(1) if lo < g[1] else _U64(0))
        g[1] = lo
        _step(g)
        g[4], g[5] = _U64(0), _U64(0)

    @_inline
    def _bf_good(g, cells, ops, sizes, k):
        big = cells // (2 + _integers(g, 4))
        ops[k], sizes[k] = S_ALLOC, big
        k += 1
        used = big
        n_small = 0
        for m in (10, 20, 30, 50, 100, 200):
            if m < cells:
                n_small += 1
        while n_small > 0:
            i = _integers(g, n_small)
            s = cells // (10, 20, 30, 50, 100, 200)[i]
            if cells - used - s < big:
                break
            ops[k], sizes[k] = S_ALLOC, s
            k += 1
            used += s
        ops[k], sizes[k] = S_ALLOC, cells - used - big + 1
        ops[k + 1], sizes[k + 1] = S_FREE_OLDEST, 0
        ops[k + 2], sizes[k + 2] = S_ALLOC, 1
        ops[k + 3], sizes[k + 3] = S_ALLOC, big
        return k + 4

    @_inline
    def _wf_good(g, cells, ops, sizes, k):
        section = np.floor(cells / 2.5)
        free = cells
        n_big = 0
        while True:
            s = cells // (8 + _integers(g, 3))
            if free - s <= section:
                break
            ops[k], sizes[k] = S_ALLOC, s
            k += 1
            free -= s
            n_big += 1
        ops[k], sizes[k] = S_ALLOC, np.int64(free - section)
        k += 1
        n_small = 1 + _integers(g, 3)
        for i in range(n_big):
            ops[k], sizes[k] = S_FREE_OLDEST, 0
            k += 1
            if i < n_small:
                ops[k], sizes[k] = S_ALLOC, 1 + _integers(g, 3)
                k += 1
        ops[k], sizes[k] = S_ALLOC, cells - free
        return k + 1

    @_jit
    def draw(kind, seeds, episodes, salt, cells, ops, sizes, lengths, work, tmp):
        """Scripts of the rows (seeds [R] int64, episodes [R]) into ops / sizes [R, cap] (zeros past the end) and
        lengths [R]; kind 1 bf-good, 2 wf-good, 3 mixed. ``work``: uint64 [27], ``tmp``: int64 [2, cap] (the
        kernels allocate nothing)."""
        g, ent, pool = work[:6], work[6:22], work[22:27]
        tmp_ops, tmp_sizes = tmp[0], tmp[1]
        for r in range(seeds.shape[0]):
            _seed(g, seeds[r], episodes[r], salt, ent, pool)
            o, s = ops[r], sizes[r]
            o[:] = 0
            s[:] = 0
            if kind == 1:
                k = _bf_good(g, cells, o, s, 0)
            elif kind == 2:
                k = _wf_good(g, cells, o, s, 0)
            else:
                kb = _bf_good(g, cells, tmp_ops, tmp_sizes, 0)
                kw = _wf_good(g, cells, tmp_ops, tmp_sizes, kb)
                first, second = _integers(g, 2), _integers(g, 2)
                k = 0
                lo, hi = (0, kb) if first == 0 else (kb, kw)
                for i in range(lo, hi):
                    o[k], s[k] = tmp_ops[i], tmp_sizes[i]
                    k += 1
                o[k], s[k] = S_FREE_ALL, 0
                k += 1
                lo, hi = (0, kb) if second == 0 else (kb, kw)
                for i in range(lo, hi):
                    o[k], s[k] = tmp_ops[i], tmp_sizes[i]
                    k += 1
            lengths[r] = k

    @_jit
    def _generator_draws(seed, episode, salt, ns, out, work):
        g, ent, pool = work[:6], work[6:22], work[22:27]
        _seed(g, seed, episode, salt, ent, pool)
        for i in range(ns.shape[0]):
            out[i] = _integers(g, ns[i])


def work_arrays(cap: int) -> tuple[np.ndarray, np.ndarray]:
    """The scratch ``draw`` needs for scripts of up to ``cap`` steps."""
    return np.zeros(27, np.uint64), np.zeros((2, int(cap)), np.int64)


def generator_draws(seed: int, episode: int, salt: int, ns) -> tuple[np.ndarray, np.ndarray]:
    """``numpy_generator(seed, episode, salt).integers(0, n)`` for each n of ``ns`` (1 <= n < 2^32), and the PCG64
    state after them as [state high, state low, inc high, inc low, has_uint32, uinteger] (for the tests)."""
    ns = np.asarray(ns, np.int64)
    out, work = np.zeros(len(ns), np.int64), np.zeros(27, np.uint64)
    _generator_draws(np.int64(seed), np.int64(episode), np.int64(salt), ns, out, work)
    return out, work[:6].copy()

__all__ = ["AVAILABLE", "KINDS", "ScriptDrawer", "draw", "generator_draws", "max_script_len", "script_kind",
           "work_arrays"]
