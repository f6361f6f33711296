"""The batched allocation step compiled with numba: ``JitAllocDomain``, an ``AllocDomain`` whose ``start``,
``step``, ``observe``, ``info`` and ``action_mask`` run one compiled loop over the B heaps.

Why: the torch core steps B heaps with a few hundred tensor ops per step (the request stream alone loops a dozen
times, each pass a dozen ops over the rows still waiting for an allocation), and rebuilds the free-run table
from the whole [B, N] bitmap after every step. Written per heap, a step is a few hundred machine instructions:
draw requests, free blocks, keep a sorted table of free runs up to date by splitting or merging one run, pick
a run, write the observation row.

Nothing else changes: the compiled loop reads and writes the very tensors of ``HeapBatch``, the domain and its
request stream (numpy views of their CPU memory), so ``heaps``, ``state_dict()``, checkpoints, ``Trials`` (the
episodes, trials, autoreset and RL^2 inputs) and every reader of ``domain.runs`` work as before. The per-heap
table of free runs is this module's own cache, keyed on ``HeapBatch.version``: anything else that changes a
heap (a checkpoint load, a test that allocates by hand) makes it rebuild from the bitmap.

Scope: CPU; the request streams of Lim & Maddukuri (``random`` and the scripted ``bf-good`` / ``wf-good`` /
``mixed``, whose scripts are drawn per episode by ``jit_scripts`` or in Python from the stream's own per-row numpy
Generators), the ``pattern`` stream (every size law, lifetime law, free order and phase), a ``tasks`` stream whose
tasks are all pattern streams (the traces suite's training profiles) and the ``trace`` stream; every action space
and placement rule; the ``ideal`` (compacting) heap of the capacity bound; ``on_fail="end"``; no ``skip_forced``.
``AllocCore`` picks this domain by itself where the config is in scope and numba imports (``jit=False``, or
``DREAMALLOC_JIT=0`` in the environment for a whole run, turns it off); everything else runs on the torch core.
If a stream is swapped after construction (the app does), or its ``next`` / ``reset`` replaced on the instance,
the domain hands back to the torch methods. In the heuristic space with autoreset and no RL^2 / task inputs,
``AllocCore.step`` runs ``Trials.step`` fused with this domain's step
(``fused_step``): two compiled passes instead of the trials component's tensor ops.

The pattern, task and trace streams are reset by their own torch ``reset`` (once an episode), and an exponential
lifetime is computed by torch before each step (``_exp_lifetimes``: libm's log1p, which compiled code would call,
differs from torch's in the last bit for a few per cent of inputs); their requests are drawn in the kernels.

Semantics are the torch core's, bit for bit: ``tests/test_jit_env.py`` steps both with the same seeds and
actions over every action space, rule, stream and observation part and compares every observation, reward,
flag, info value and the final state. Cost of maintenance: a change to the step semantics in ``env.py``,
``heap/``, the Lim streams or ``PatternStream`` / ``TraceStream`` must be made here too (and, for the first three,
in ``fast.py``, the one-heap path); the test fails until it is.
"""

from __future__ import annotations

import operator
import os

import numpy as np
import torch

from dreamalloc.alloc import jit_scripts
from dreamalloc.alloc.env import AllocConfig, AllocDomain
from dreamalloc.alloc.fast import FastAllocDomain
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.heap.state import HeapBatch
from dreamalloc.alloc.workloads import ALIASES, STREAMS
from dreamalloc.alloc.workloads.base import ScriptedStream
from dreamalloc.alloc.workloads.families import LIFETIMES, ORDERS, PHASES, PatternStream
from dreamalloc.alloc.workloads.lim import RandomStream
from dreamalloc.alloc.workloads.tasks import TaskStream, listed_tasks
from dreamalloc.alloc.workloads.traces import TraceStream
from dreamalloc.core.rng import numpy_generator

try:  # numba is a dependency; without it (or on a platform it does not support) the torch core runs
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None

_RULE = {r: i for i, r in enumerate(RULES)}  # first, next, best, worst, second
_SPACE = {"heuristic": 0, "address": 1, "hole": 2}
_TERMINAL = {"lim": 0, "zero": 1, "alloc": 2}
ERR_SIZE, ERR_NO_ALLOC = 1, 2


def _as_tensors(info: dict) -> dict:
    """numpy arrays (also inside dicts) as tensors sharing their memory."""
    return {k: _as_tensors(v) if isinstance(v, dict) else torch.from_numpy(v) for k, v in info.items()}


def scope_error(cfg: AllocConfig, device) -> str | None:
    """Why the compiled step cannot run this config (None: it can)."""
    if not AVAILABLE:
        return "numba is not installed"
    if torch.device(device).type != "cpu":
        return f"it runs on CPU, not {device}"
    if cfg.on_fail != "end":
        return f"it implements on_fail='end' only, not {cfg.on_fail!r}"
    if cfg.skip_forced:
        return "it does not implement skip_forced"
    return None


def _scripted_class(cls) -> bool:
    """A ScriptedStream whose requests come from its script tables alone (no overridden next / reset)."""
    return isinstance(cls, type) and issubclass(cls, ScriptedStream) and cls.next is ScriptedStream.next and \
        cls.reset is ScriptedStream.reset


def stream_kind(stream) -> int:
    """1: the random stream; 2: a scripted stream continued by the random stream; 3: a pattern stream, or a task
    stream whose tasks are all pattern streams; 4: a trace stream; 0: out of scope."""
    if type(stream) is RandomStream:
        return 1
    if _scripted_class(type(stream)) and type(stream.then) is RandomStream:
        return 2
    if type(stream) is PatternStream or (type(stream) is TaskStream and
                                         all(type(t) is PatternStream for t in stream.streams)):
        return 3
    if type(stream) is TraceStream:
        return 4
    return 0


def _class_in_scope(name: str, params: dict) -> bool:
    """Whether the stream named in a config is one the kernels run (known before building it: traces load
    files)."""
    cls = STREAMS.get(ALIASES.get(name, name))
    if cls is RandomStream or _scripted_class(cls) or cls is PatternStream or cls is TraceStream:
        return True
    if cls is TaskStream:
        tasks = listed_tasks(params)
        return bool(tasks) and all(STREAMS.get(ALIASES.get(n, n)) is PatternStream for n, _ in tasks)
    return False


# The kernels take the state as tuples of numpy views (built by JitAllocDomain._H / _R / _S / _D / _P):
#   H  HeapBatch: occ, owner, block_start, block_size, block_seq, live, perm, pos, n_live, used, n_allocs,
#      n_dropped, rover
#   R  free runs: starts [B, N/2 + 2], lengths, count per heap
#   S  stream: kind, script ops, sizes, length, ptr, random key, counter, free_prob, size_min, size_max, seq_base,
#      PT (pattern streams: task id per heap; per task: integer and float parameters, size CDF, random key and
#      counter per heap, death times, last block seen, peak phase; the exponential lifetimes of this step),
#      TR (trace stream: event op / size / ref, next allocation, skip table; per heap start, end, ptr, base, a0)
#   D  domain: request, hist, n_invalid, freed, placed_at
#   P  step settings: action space, rule codes, align end, alloc / invalid reward, terminal rule, max_allocs,
#      max_invalid, holes by size, ideal (compacting) heap
#   T  Trials: episode, (episode, trial) returns, lengths, prev_action, prev_reward, (episode, trial) start flags, K
#   OB observation settings: bitmap, size scale, summary, hole features, holes by size
if AVAILABLE:
    _jit = numba.njit(cache=True, nogil=True, _nrt=False)
    _inline = numba.njit(cache=True, nogil=True, inline="always", _nrt=False)
    _U64 = np.uint64
    _GOLDEN = np.uint64(0x9E3779B97F4A7C15)
    _M1 = np.uint64(0xBF58476D1CE4E5B9)
    _M2 = np.uint64(0x94D049BB133111EB)
    _SALT_MUL = np.uint64(0x632BE59BD9B4E019)
    _INV53 = 1.0 / (1 << 53)
    _I64MAX = np.iinfo(np.int64).max

    @_inline
    def _splitmix(x):
        z = x + _GOLDEN
        z = (z ^ (z >> _U64(30))) * _M1
        z = (z ^ (z >> _U64(27))) * _M2
        return z ^ (z >> _U64(31))

    @_inline
    def _uniform(key, c):
        return float(np.int64(_splitmix(_U64(key) + _U64(c) * _GOLDEN) >> _U64(11))) * _INV53  # < 2^53: exact

    # ------------------------------------------------------------------------------------------------
    # free runs: rs[b, :nr[b]] starts in address order, rl the lengths
    @_jit
    def _rebuild(occ, b, rs, rl, nr, cnt, mx):
        N = occ.shape[1]
        k = 0
        i = 0
        cnt[b, :] = 0
        m = 0
        while i < N:
            if occ[b, i]:
                i += 1
                continue
            j = i
            while j < N and not occ[b, j]:
                j += 1
            rs[b, k] = i
            rl[b, k] = j - i
            cnt[b, j - i] += 1
            m = max(m, j - i)
            k += 1
            i = j
        nr[b] = k
        mx[b] = m

    @_inline
    def _drop_len(b, length, cnt, mx):
        """One run of ``length`` fewer; the largest length moves down past lengths no run has."""
        cnt[b, length] -= 1
        if length == mx[b]:
            m = length
            while m > 0 and cnt[b, m] == 0:
                m -= 1
            mx[b] = m

    @_inline
    def _add_len(b, length, cnt, mx):
        cnt[b, length] += 1
        if length > mx[b]:
            mx[b] = length

    @_inline
    def _cut(b, addr, size, R):
        """Remove [addr, addr + size) from the run holding it (R: rs, rl, nr and the run-length counts cnt, mx)."""
        rs, rl, nr, cnt, mx = R
        n = nr[b]
        i = n - 1
        while rs[b, i] > addr:
            i -= 1
        left = addr - rs[b, i]
        right = rs[b, i] + rl[b, i] - (addr + size)
        if left > 0:
            cnt[b, left] += 1
        if right > 0:
            cnt[b, right] += 1
        _drop_len(b, rl[b, i], cnt, mx)
        if left > 0 and right > 0:
            for j in range(n, i + 1, -1):
                rs[b, j] = rs[b, j - 1]
                rl[b, j] = rl[b, j - 1]
            rl[b, i] = left
            rs[b, i + 1] = addr + size
            rl[b, i + 1] = right
            nr[b] = n + 1
        elif left > 0:
            rl[b, i] = left
        elif right > 0:
            rs[b, i] = addr + size
            rl[b, i] = right
        else:
            for j in range(i, n - 1):
                rs[b, j] = rs[b, j + 1]
                rl[b, j] = rl[b, j + 1]
            nr[b] = n - 1

    @_inline
    def _merge(b, start, size, R):
        """Add the free cells [start, start + size) to the runs, joining free neighbours."""
        rs, rl, nr, cnt, mx = R
        n = nr[b]
        j = 0
        while j < n and rs[b, j] < start:
            j += 1
        end = start + size
        join_left = j > 0 and rs[b, j - 1] + rl[b, j - 1] == start
        join_right = j < n and rs[b, j] == end
        new = size
        if join_left:
            new += rl[b, j - 1]
            cnt[b, rl[b, j - 1]] -= 1  # the merged run is at least as long: the largest cannot fall
        if join_right:
            new += rl[b, j]
            cnt[b, rl[b, j]] -= 1
        _add_len(b, new, cnt, mx)
        if join_left and join_right:
            rl[b, j - 1] += size + rl[b, j]
            for q in range(j, n - 1):
                rs[b, q] = rs[b, q + 1]
                rl[b, q] = rl[b, q + 1]
            nr[b] = n - 1
        elif join_left:
            rl[b, j - 1] += size
        elif join_right:
            rs[b, j] = start
            rl[b, j] += size
        else:
            for q in range(n, j, -1):
                rs[b, q] = rs[b, q - 1]
                rl[b, q] = rl[b, q - 1]
            rs[b, j] = start
            rl[b, j] = size
            nr[b] = n + 1

    # ------------------------------------------------------------------------------------------------
    # heap mutations (HeapBatch._place / _release / _clear for one row)
    @_inline
    def _place(H, R, b, addr, size):
        occ, owner, bstart, bsize, bseq, live, perm, pos, n_live, used, n_allocs, n_dropped, rover = H
        k = n_live[b]
        slot = perm[b, k]
        n_live[b] = k + 1
        bstart[b, slot] = addr
        bsize[b, slot] = size
        bseq[b, slot] = n_allocs[b] + n_dropped[b]
        live[b, slot] = True
        n_allocs[b] += 1
        used[b] += size
        rover[b] = (addr + size) % occ.shape[1]
        for c in range(addr, addr + size):
            owner[b, c] = slot
            occ[b, c] = True
        _cut(b, addr, size, R)

    @_inline
    def _release(H, R, b, slot):
        occ, owner, bstart, bsize, bseq, live, perm, pos, n_live, used, n_allocs, n_dropped, rover = H
        start, size = bstart[b, slot], bsize[b, slot]
        for c in range(start, start + size):
            owner[b, c] = -1
            occ[b, c] = False
        live[b, slot] = False
        bseq[b, slot] = -1
        used[b] -= size
        p = pos[b, slot]
        k = n_live[b] - 1
        last = perm[b, k]
        perm[b, p] = last
        pos[b, last] = p
        perm[b, k] = slot
        pos[b, slot] = k
        n_live[b] = k
        _merge(b, start, size, R)

    @_inline
    def _clear(H, R, b):
        occ, owner, bstart, bsize, bseq, live, perm, pos, n_live, used, n_allocs, n_dropped, rover = H
        N = occ.shape[1]
        for c in range(N):
            owner[b, c] = -1
            occ[b, c] = False
            live[b, c] = False
            bseq[b, c] = -1
        n_live[b] = 0
        used[b] = 0
        rl, cnt = R[1], R[3]
        for i in range(R[2][b]):
            cnt[b, rl[b, i]] -= 1
        cnt[b, N] += 1
        R[4][b] = N
        R[0][b, 0] = 0
        R[1][b, 0] = N
        R[2][b] = 1

    @_jit
    def _compact(H, R, b):
        """HeapBatch._compact for heap b (the ideal heap): every live block slid left in address order, keeping
        its slot; then all free cells form one run."""
        occ, owner, bstart, bsize, bseq, live, perm, pos, n_live, used, n_allocs, n_dropped, rover = H
        N = occ.shape[1]
        at = 0
        for c in range(N):  # a block begins where the owner changes to a live slot
            s = owner[b, c]
            if s >= 0 and (c == 0 or owner[b, c - 1] != s):
                bstart[b, s] = at
                at += bsize[b, s]
        for c in range(N):
            owner[b, c] = -1
            occ[b, c] = False
        for s in range(N):
            if live[b, s]:
                for c in range(bstart[b, s], bstart[b, s] + bsize[b, s]):
                    owner[b, c] = s
                    occ[b, c] = True
        rover[b] = used[b] % N
        _rebuild(occ, b, R[0], R[1], R[2], R[3], R[4])

    # ------------------------------------------------------------------------------------------------
    # the request streams: (op, value) with op 0 alloc (value = size), 1 free (value = slot, -1 none), 2 free all
    @_inline
    def _random_next(H, S, b):
        key, counter, free_prob, size_min, size_max = S[5], S[6], S[7], S[8], S[9]
        c = counter[b]
        counter[b] = c + 3
        u_op = _uniform(key[b], c)
        u_block = _uniform(key[b], c + 1)
        u_size = _uniform(key[b], c + 2)
        n = H[8][b]
        N = H[0].shape[1]
        if u_op < free_prob and n > 0:
            k = min(int(u_block * n), N - 1)
            return 1, H[6][b, k]
        return 0, size_min + int(u_size * (size_max - size_min + 1))

    @_jit
    def _slot_of(H, b, seq):
        """The live slot of heap b holding the block of sequence number ``seq``; -1 where none is live."""
        live, bseq = H[5], H[4]
        for s in range(live.shape[1]):
            if live[b, s] and bseq[b, s] == seq:
                return s
        return -1

    @_jit
    def _pick(H, b, order, u_block):
        """PatternStream._pick: the live slot ``order`` frees (random: perm[u * n_live]; fifo / lifo: the live block
        of the smallest / largest sequence number, the first such slot)."""
        live, bseq = H[5], H[4]
        N = live.shape[1]
        if order == 0:
            return H[6][b, min(int(u_block * H[8][b]), N - 1)]
        best = 0
        if order == 1:
            best_seq = _I64MAX
            for s in range(N):
                if live[b, s] and bseq[b, s] < best_seq:
                    best, best_seq = s, bseq[b, s]
        else:
            best_seq = -1
            for s in range(N):
                if live[b, s] and bseq[b, s] > best_seq:
                    best, best_seq = s, bseq[b, s]
        return best

    @_jit
    def _pattern_next(H, PT, b):
        """PatternStream.next for heap b, on its task's sub-stream (a plain pattern stream is task 0 of 1)."""
        task_id, ipar, fpar, cdf, keys, counters, death, seen, drain, life_pre = PT
        k = task_id[b]
        lifetime, order, phase, phase_len, top = ipar[k, 0], ipar[k, 1], ipar[k, 2], ipar[k, 3], ipar[k, 4]
        free_prob, life, peak_keep, plateau_level = fpar[k, 0], fpar[k, 1], fpar[k, 2], fpar[k, 3]
        key, c = keys[k, b], counters[k, b]
        counters[k, b] = c + 4
        u_op, u_block, u_size = _uniform(key, c), _uniform(key, c + 1), _uniform(key, c + 2)
        live, bseq = H[5], H[4]
        N = live.shape[1]
        n, t, used = H[8][b], H[10][b] + H[11][b], H[9][b]
        has = n > 0
        if lifetime == 0:  # prob
            base = u_op < free_prob and has
            base_block = _pick(H, b, order, u_block)
        else:
            nslot = _pick(H, b, 2, 0.0)  # the newest live block (lifo's pick)
            nseq = bseq[b, nslot] if live[b, nslot] else -1
            if nseq >= 0 and nseq == t - 1 and nseq > seen[k, b]:
                # fixed: life; exponential: -life * log1p(-u) computed by torch before the kernel (life_pre)
                death[k, b, nslot] = float(t) + (life if lifetime == 1 else life_pre[b])
                seen[k, b] = nseq
            dmin, base_block = np.inf, 0
            for s in range(N):
                if live[b, s] and death[k, b, s] < dmin:
                    dmin, base_block = death[k, b, s], s
            base = has and dmin <= float(t)
        free, block = base, base_block
        if phase != 0:
            ctrl, ctrl_free = False, False
            if phase == 3:  # plateau; the torch comparison of an integer with a float runs in float32
                grow = (t % (2 * phase_len)) < phase_len
                ctrl = not grow
                ctrl_free = np.float32(used) > np.float32(plateau_level * N)
            else:
                grow = t < phase_len
                if phase == 2:  # peak
                    dr = drain[k, b]
                    if not grow and dr == 0:
                        dr = 1
                    over = np.float32(used) > np.float32(peak_keep * N)
                    if dr == 1 and not over:
                        dr = 2
                    drain[k, b] = dr
                    ctrl = dr == 1
                    ctrl_free = over
            if ctrl:
                free = ctrl_free and has
                block = base_block if lifetime == 0 else _pick(H, b, order, u_block)
            free = free and not grow
        if free:
            return 1, block
        lo, hi = 0, cdf.shape[1]  # torch.searchsorted(cdf, u, right=True): how many entries are <= u
        while lo < hi:
            mid = (lo + hi) // 2
            if cdf[k, mid] <= u_size:
                lo = mid + 1
            else:
                hi = mid
        return 0, min(lo, top) + 1

    @_jit
    def _trace_next(H, TR, b):
        """TraceStream.next for heap b: the next event of its segment (frees of blocks allocated before the segment
        started skipped), a free-all and a restart of the segment where no allocation is left in it."""
        op, size, ref, next_alloc, table, start, end, ptr, base, a0 = TR
        E = op.shape[0]
        p = ptr[b]
        wrap = next_alloc[min(p, E)] >= end[b]
        if not wrap:  # the first event >= p that is an allocation or a free of a block from a0 on (binary lifting)
            for lvl in range(table.shape[0] - 1, -1, -1):
                h = np.int64(1) << lvl
                if table[lvl, min(p, E)] < a0[b] and p + h <= E:
                    p += h
        if wrap:
            ptr[b] = start[b]
            base[b] = H[10][b] + H[11][b]
            return 2, -1
        ptr[b] = p + 1
        pc = min(p, E - 1)
        if op[pc] == 0:
            return 0, size[pc]
        return 1, (_slot_of(H, b, base[b] + ref[pc] - a0[b]) if op[pc] == 1 else -1)

    @_inline
    def _next(H, S, b):
        kind, ops, sizes, length, ptr, seq_base = S[0], S[1], S[2], S[3], S[4], S[10]
        if kind == 3:
            return _pattern_next(H, S[11], b)
        if kind == 4:
            return _trace_next(H, S[12], b)
        if kind == 2:
            p = ptr[b]
            if p < length[b]:
                s_op, s_size = ops[b, p], sizes[b, p]
                ptr[b] = p + 1
                if p == 0:
                    seq_base[b] = H[10][b] + H[11][b]
                if s_op == 0:  # S_ALLOC
                    return 0, s_size
                if s_op == 2:  # S_FREE_ALL
                    return 2, -1
                if s_op == 1:  # S_FREE_OLDEST: the lowest-slot live block of the smallest sequence number
                    return 1, (_pick(H, b, 1, 0.0) if H[8][b] > 0 else -1)
                return 1, _slot_of(H, b, seq_base[b] + s_size)  # S_FREE_SEQ
        return _random_next(H, S, b)

    @_inline
    def _advance(H, R, S, request, freed, b):
        """Apply the stream's frees until row b has an allocation request; returns an error code."""
        N = H[0].shape[1]
        for _ in range(4 * N + 16):
            op, v = _next(H, S, b)
            if op == 0:
                request[b] = v
                if v < 1 or v > N:
                    return ERR_SIZE
                return 0
            if op == 1:
                if v >= 0:
                    _release(H, R, b, v)
                    freed[b] = True
            else:
                _clear(H, R, b)
                freed[b] = True
        return ERR_NO_ALLOC

    # ------------------------------------------------------------------------------------------------
    @_inline
    def _largest(R, b):
        return R[4][b]

    @_inline
    def _rule(R, b, size, rule, rover, align_end):
        """Start address the rule picks for the request (heuristics.choose_run for one row); -1 if none fits."""
        rs, rl, n = R[0], R[1], R[2][b]
        best = -1
        if rule == 0:  # first
            for i in range(n):
                if rl[b, i] >= size:
                    best = i
                    break
        elif rule == 1:  # next: the first fitting run ending after the rover, else the first fitting run
            wrap = -1
            for i in range(n):
                if rl[b, i] >= size:
                    if rs[b, i] + rl[b, i] > rover:
                        best = i
                        break
                    if wrap < 0:
                        wrap = i
            if best < 0:
                best = wrap
        elif rule == 2:  # best
            for i in range(n):
                if rl[b, i] >= size and (best < 0 or rl[b, i] < rl[b, best]):
                    best = i
        elif rule == 3:  # worst
            for i in range(n):
                if rl[b, i] >= size and (best < 0 or rl[b, i] > rl[b, best]):
                    best = i
        else:  # second: the second fitting run in address order, the first when only one fits
            for i in range(n):
                if rl[b, i] >= size:
                    if best >= 0:
                        best = i
                        break
                    best = i
        if best < 0:
            return -1
        if align_end:
            return rs[b, best] + rl[b, best] - size
        return rs[b, best]

    @_inline
    def _hole_after(R, b, size, after, by_size):
        """The run (index into R) of the hole that follows run ``after`` (-1: the first hole): the next run that
        fits in address order, or with ``by_size`` the next by (length, start); -1 where there is none."""
        rs, rl, n = R[0], R[1], R[2][b]
        if not by_size:
            for i in range(after + 1, n):
                if rl[b, i] >= size:
                    return i
            return -1
        pl, ps = (-1, -1) if after < 0 else (rl[b, after], rs[b, after])
        best, bl, bs = -1, _I64MAX, _I64MAX
        for i in range(n):
            ln, st = rl[b, i], rs[b, i]
            if ln >= size and (ln > pl or (ln == pl and st > ps)) and (ln < bl or (ln == bl and st < bs)):
                best, bl, bs = i, ln, st
        return best

    @_inline
    def _decode(R, b, a, size, space, rules, rover, align_end, by_size):
        rs, rl, n = R[0], R[1], R[2][b]
        if space == 0:
            return _rule(R, b, size, rules[a], rover, align_end)
        if space == 1:
            for i in range(n):
                if rs[b, i] <= a and rs[b, i] + rl[b, i] >= a + size:
                    return a
            return -1
        i = -1
        for _ in range(a + 1):
            i = _hole_after(R, b, size, i, by_size)
            if i < 0:
                return -1
        return rs[b, i] + rl[b, i] - size if align_end else rs[b, i]

    @_inline
    def _step_row(H, R, S, D, P, b, a, reward, terminated, truncated, invalid, invalid_trunc):
        """One step of heap b (AllocDomain.step); returns an error code."""
        request, hist, n_invalid, freed, placed_at = D
        space, rules, align_end, alloc_r, invalid_r, terminal, max_allocs, max_invalid, by_size, ideal = P
        H_hist = hist.shape[1]
        size = request[b]
        addr = _decode(R, b, a, size, space, rules, H[12][b], align_end, by_size)
        valid = addr >= 0
        placed_at[b] = addr
        if valid:
            _place(H, R, b, addr, size)
            freed[b] = False
            for j in range(H_hist - 1, 0, -1):
                hist[b, j] = hist[b, j - 1]
            if H_hist > 0:
                hist[b, 0] = size
            err = _advance(H, R, S, request, freed, b)
            if err:
                return err
            if ideal and _largest(R, b) < request[b] and H[0].shape[1] - H[9][b] >= request[b]:
                _compact(H, R, b)  # AllocDomain._compact_where_needed
        fits = _largest(R, b) >= request[b]
        if not valid:
            reward[b] = invalid_r
        elif fits or terminal == 2:
            reward[b] = alloc_r
        elif terminal == 1:
            reward[b] = 0.0
        else:
            reward[b] = alloc_r if freed[b] else 0.0
        terminated[b] = valid and not fits
        truncated[b] = valid and fits and H[10][b] + H[11][b] >= max_allocs
        invalid[b] = False
        invalid_trunc[b] = False
        if space != 0 and not valid:
            n_invalid[b] += 1
            invalid[b] = True
            if n_invalid[b] >= max_invalid:
                invalid_trunc[b] = True
                truncated[b] = True
        return 0

    @_jit
    def _step(H, R, S, D, P, action, reward, terminated, truncated, invalid, invalid_trunc):
        """One step of every row (AllocDomain.step); returns (error code, row)."""
        for b in range(action.shape[0]):
            err = _step_row(H, R, S, D, P, b, action[b], reward, terminated, truncated, invalid, invalid_trunc)
            if err:
                return err, b
        return 0, -1

    @_inline
    def _start_row(H, R, S, D, b, seed, episode, salt):
        """AllocDomain.start for heap b: empty heap, the random stream reseeded (a scripted stream's tables are
        drawn before, by ``_draw_scripts``), the stream up to its first request; returns an error code."""
        request, hist, n_invalid, freed, placed_at = D
        _clear(H, R, b)
        H[10][b] = 0
        H[11][b] = 0
        H[12][b] = 0
        hist[b, :] = -1
        n_invalid[b] = 0
        if S[0] <= 2:  # the pattern and trace streams were reset by their own (torch) reset before the kernel
            x = _U64(seed) ^ (_U64(salt) * _SALT_MUL)  # CounterRNG.reseed of the random stream (or of the
            S[5][b] = np.int64(_splitmix(_splitmix(x) + _U64(episode)))  # script's continuation)
            S[6][b] = 0
        return _advance(H, R, S, request, freed, b)

    @_jit
    def _start(H, R, S, D, rows, seeds, episodes, salt):
        for i in range(rows.shape[0]):
            err = _start_row(H, R, S, D, rows[i], seeds[i], episodes[i], salt)
            if err:
                return err, rows[i]
        return 0, -1

    @_jit
    def _rebuild_all(occ, rs, rl, nr, cnt, mx):
        for b in range(occ.shape[0]):
            _rebuild(occ, b, rs, rl, nr, cnt, mx)

    @_inline
    def _metrics_row(H, R, request, b, out_i, out_f):
        used, n_allocs = H[9], H[10]
        N = H[0].shape[1]
        fN = np.float32(N)
        free = N - used[b]
        largest = _largest(R, b)
        n = R[2][b]
        out_i[0, b] = n_allocs[b]
        out_i[1, b] = free
        out_i[2, b] = largest
        out_i[3, b] = n
        out_i[4, b] = request[b]
        out_f[0, b] = np.float32(1.0) - np.float32(largest) / np.float32(free) if free > 0 else np.float32(0.0)
        out_f[1, b] = min(np.float32(n) / fN, np.float32(1.0)) if 0 < free < N else np.float32(0.0)
        out_f[2, b] = np.float32(used[b]) / fN

    @_jit
    def _metrics(H, R, request, out_i, out_f):
        """heap_metrics for every row: out_i [5, B] allocations, free cells, largest run, runs, request;
        out_f [3, B] frag_largest, frag_runs, utilisation (float32, as torch computes them)."""
        for b in range(request.shape[0]):
            _metrics_row(H, R, request, b, out_i, out_f)

    @_inline
    def _observe_row(H, R, D, b, out, i, bitmap, scale, summary, n_hole, by_size):
        """AllocDomain.observe of heap b into out[i]."""
        occ, used = H[0], H[9]
        request, hist = D[0], D[1]
        rs, rl, nr = R[0], R[1], R[2]
        N = occ.shape[1]
        fN = np.float32(N)
        j = 0
        if bitmap:
            for c in range(N):
                out[i, c] = np.float32(occ[b, c])
            j = N
        out[i, j] = np.float32(request[b]) * scale
        j += 1
        for q in range(hist.shape[1]):
            h = hist[b, q]
            out[i, j + q] = np.float32(-1.0) if h < 0 else np.float32(h) * scale
        j += hist.shape[1]
        if summary:
            free = N - used[b]
            largest = _largest(R, b)
            out[i, j] = np.float32(free) / fN
            out[i, j + 1] = np.float32(largest) / fN
            out[i, j + 2] = np.float32(nr[b]) / fN
            out[i, j + 3] = np.float32(1.0) - np.float32(largest) / np.float32(free) if free > 0 \
                else np.float32(0.0)
            j += 4
        if n_hole > 0:
            for q in range(2 * n_hole):
                out[i, j + q] = np.float32(0.0)
            r = -1
            for k in range(n_hole):
                r = _hole_after(R, b, request[b], r, by_size)
                if r < 0:
                    break
                out[i, j + 2 * k] = np.float32(rs[b, r]) / fN
                out[i, j + 2 * k + 1] = np.float32(rl[b, r]) / fN

    @_jit
    def _observe(H, R, D, rows, out, bitmap, scale, summary, n_hole, by_size):
        """AllocDomain.observe for the rows into out [len(rows), D] float32."""
        for i in range(rows.shape[0]):
            _observe_row(H, R, D, rows[i], out, i, bitmap, scale, summary, n_hole, by_size)

    # ------------------------------------------------------------------------------------------------
    # Trials.step fused with the domain's step (heuristic space, autoreset, no RL^2 / task inputs)
    @_jit
    def _fused_step(H, R, S, D, P, T, OB, action, reward, terminated, truncated, invalid, done, trial_end, snap_r,
                    snap_l, obs, out_i, out_f, new_obs, new_i, new_f):
        """Phase 1: every row's step, its trial counters and flags, its observation and metrics; the rows that
        go on are copied into new_obs / new_i / new_f too (phase 2 writes the restarted ones there)."""
        episode, returns, lens, prev_action, prev_reward, starts, K = T
        bitmap, scale, summary, n_hole, by_size = OB
        for b in range(action.shape[0]):
            err = _step_row(H, R, S, D, P, b, action[b], reward, terminated, truncated, invalid, invalid)
            if err:
                return err, b
            r = reward[b]
            returns[0, b] += r
            returns[1, b] += r
            lens[0, b] += 1
            lens[1, b] += 1
            prev_action[b] = action[b]
            prev_reward[b] = r
            starts[0, b] = False
            starts[1, b] = False
            d = terminated[b] or truncated[b]
            done[b] = d
            trial_end[b] = d and episode[b] % K == K - 1
            snap_r[0, b] = returns[0, b]
            snap_r[1, b] = returns[1, b]
            snap_l[0, b] = lens[0, b]
            snap_l[1, b] = lens[1, b]
            _observe_row(H, R, D, b, obs, b, bitmap, scale, summary, n_hole, by_size)
            _metrics_row(H, R, D[0], b, out_i, out_f)
            if not d:
                for c in range(obs.shape[1]):
                    new_obs[b, c] = obs[b, c]
                for q in range(out_i.shape[0]):
                    new_i[q, b] = out_i[q, b]
                for q in range(out_f.shape[0]):
                    new_f[q, b] = out_f[q, b]
        return 0, -1

    @_jit
    def _fused_restart(H, R, S, D, T, OB, rows, seeds, salt, obs, out_i, out_f):
        """Phase 2: Trials._start and AllocDomain.start for the finished rows (their episode numbers already
        advanced), their new observation and metrics."""
        episode, returns, lens, prev_action, prev_reward, starts, K = T
        bitmap, scale, summary, n_hole, by_size = OB
        for i in range(rows.shape[0]):
            b = rows[i]
            err = _start_row(H, R, S, D, b, seeds[b], episode[b], salt)
            if err:
                return err, b
            opens = episode[b] % K == 0
            returns[0, b] = 0.0
            lens[0, b] = 0
            starts[0, b] = True
            starts[1, b] = opens
            if opens:
                returns[1, b] = 0.0
                lens[1, b] = 0
                prev_action[b] = -1
                prev_reward[b] = 0.0
            _observe_row(H, R, D, b, obs, b, bitmap, scale, summary, n_hole, by_size)
            _metrics_row(H, R, D[0], b, out_i, out_f)
        return 0, -1

    @_jit
    def _life_uniforms(task_id, keys, counters, out):
        """The fourth uniform of each heap's next pattern request (its lifetime draw), on its task's stream."""
        for b in range(out.shape[0]):
            k = task_id[b]
            out[b] = _uniform(keys[k, b], counters[k, b] + 3)

    @_jit
    def _masks(R, request, space, out):
        """[B, n_actions] valid actions: address (every start that fits) or hole (the first n fitting runs)."""
        rs, rl, nr = R[0], R[1], R[2]
        for b in range(out.shape[0]):
            out[b, :] = False
            size = request[b]
            if space == 1:
                for r in range(nr[b]):
                    if rl[b, r] >= size:
                        for a in range(rs[b, r], rs[b, r] + rl[b, r] - size + 1):
                            out[b, a] = True
            else:
                k = 0
                for r in range(nr[b]):
                    if rl[b, r] >= size and k < out.shape[1]:
                        out[b, k] = True
                        k += 1


class JitAllocDomain(FastAllocDomain):
    """``AllocDomain`` stepping every heap in one compiled loop (see the module docstring). Its ``runs``, the torch
    core's run table, is built from the bitmap when someone asks for it (``FastAllocDomain``); the kernels keep
    their own."""

    def __init__(self, num_heaps: int, cfg: AllocConfig, device="cpu"):
        why = scope_error(cfg, device)
        if why is not None:
            raise ValueError(f"the compiled allocation step cannot run this env: {why}")
        super().__init__(num_heaps, cfg, device)
        self._kstream = self.stream
        kind = stream_kind(self.stream)
        if kind == 0:
            raise ValueError(f"the compiled allocation step cannot run the {cfg.stream!r} stream ({_SCOPE})")
        self._kind = kind
        self._neg_life = None  # per task: -life where the lifetime law is exponential (see _exp_lifetimes)
        if kind == 3:
            subs = self.stream.streams if type(self.stream) is TaskStream else [self.stream]
            if any(t.lifetime == "exponential" for t in subs):
                self._neg_life = torch.tensor([-t.life for t in subs], dtype=torch.float64)
        B, N = self.B, self.N
        self._rs = np.zeros((B, N // 2 + 2), np.int64)
        self._rl = np.zeros_like(self._rs)
        self._nr = np.zeros(B, np.int64)
        self._cnt = np.zeros((B, N + 1), np.int64)  # per heap: how many free runs of each length
        self._mx = np.zeros(B, np.int64)  # per heap: the largest free run
        self._kv = -1  # heaps.version the run table matches
        self._scratch = None  # the compiled script draws (jit_scripts.ScriptDrawer), made on first use
        rules = np.array([_RULE[r] for r in cfg.heuristics] if cfg.action == "heuristic" else [0], np.int64)
        max_invalid = cfg.max_invalid if self.masked else 1 << 62
        self._P = (_SPACE[cfg.action], rules, cfg.align == "end", float(cfg.alloc_reward),
                   float(cfg.invalid_reward), _TERMINAL[cfg.terminal_reward], int(cfg.max_allocs), int(max_invalid),
                   cfg.hole_order == "size", bool(cfg.ideal))
        self._scale = np.float32(1.0 if cfg.size_scale == "raw" else 1.0 / N)
        self._every = np.arange(B, dtype=np.int64)

    # ----------------------------------------------------------------------------------------------
    def _live(self) -> bool:
        """Whether the kernels may run: the stream is the one this domain was built for (the app swaps it), and
        its ``next`` / ``reset`` were not replaced on the instance (a hook that logs requests, say): then its own
        methods run, through the torch step."""
        st = self.stream
        return st is self._kstream and "next" not in st.__dict__ and "reset" not in st.__dict__

    def _H(self) -> tuple:
        """numpy views of the heap tensors (cached; rebuilt if a tensor was replaced rather than written)."""
        h: HeapBatch = self.heaps
        ts = (h.occ, h.owner, h.block_start, h.block_size, h.block_seq, h.live, h.perm, h.pos, h.n_live, h.used,
              h.n_allocs, h.n_dropped, h.rover)
        cached = self.__dict__.get("_h_views")
        if cached is None or not all(map(operator.is_, cached[0], ts)):
            cached = self.__dict__["_h_views"] = (ts, tuple(t.numpy() for t in ts))
        return cached[1]

    def _R(self) -> tuple:
        if self._kv != self.heaps.version:
            _rebuild_all(self.heaps.occ.numpy(), self._rs, self._rl, self._nr, self._cnt, self._mx)
        return self._rs, self._rl, self._nr, self._cnt, self._mx

    def _S(self) -> tuple:
        """numpy views of the stream's state (cached; a scripted stream's reset may replace its script tables)."""
        st = self.stream
        cached = self.__dict__.get("_s_views")
        key = (st, st.ops, st.sizes) if self._kind == 2 else (st,)
        if cached is not None and all(map(operator.is_, cached[0], key)):
            return cached[1]
        views = self._S_build()
        self.__dict__["_s_views"] = (key, views)
        return views

    def _S_build(self) -> tuple:
        st = self.stream
        z = np.zeros((1, 1), np.int64)
        scripted, seq_base = (z, z, z[0], z[0]), z[0]
        if self._kind == 2:
            scripted = (st.ops.numpy(), st.sizes.numpy(), st.length.numpy(), st.ptr.numpy())
            seq_base = st.seq_base.numpy()
        if self._kind <= 2:
            rnd = st if self._kind == 1 else st.then
            lim = (rnd.rng.key.numpy(), rnd.rng.counter.numpy(), float(rnd.free_prob), int(rnd.size_min),
                   int(rnd.size_max))
        else:
            lim = (np.zeros(self.B, np.int64), np.zeros(self.B, np.int64), 0.0, 1, 1)
        return (self._kind, *scripted, *lim, seq_base, _pattern_state(st, self.B), _trace_state(st))

    def _D(self) -> tuple:
        ts = (self.request, self.hist, self.n_invalid, self.freed)
        cached = self.__dict__.get("_d_views")
        if cached is None or not all(map(operator.is_, cached[0], ts)):
            cached = self.__dict__["_d_views"] = (ts, tuple(t.numpy() for t in ts))
        return (*cached[1], self.placed_at.numpy())

    def _done(self) -> None:
        """The kernels changed the heaps: bump the version and mark the run table as current."""
        self.heaps.version += 1
        self._kv = self.heaps.version

    def _raise(self, err: int) -> None:
        if err == ERR_SIZE:
            bad = self.request.numpy()
            bad = bad[(bad < 1) | (bad > self.N)][0]
            raise ValueError(f"request size must lie in [1, {self.N}] (the heap size), got {int(bad)}")
        raise RuntimeError(f"stream {self.cfg.stream!r} issued {4 * self.N + 16} requests in a row without an "
                           "allocation; a stream must keep allocating")

    # ----------------------------------------------------------------------------------------------
    def start(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, trial: torch.Tensor) -> None:
        if not self._live():
            return super().start(rows, seed, episode, trial)
        R = self._R()
        r, sd, ep = _arr(rows), _arr(seed), _arr(episode)
        if self._kind == 2:
            self._draw_scripts(r, sd, ep)
        elif self._kind >= 3:
            self._reset_stream(r, sd, ep)
        err, _ = _start(self._H(), R, self._S(), self._D(), r, sd, ep, self._salt())
        self._done()
        if err:
            self._raise(err)

    def _salt(self) -> int:
        """The salt ``_start`` reseeds the random stream (or a script's continuation) with; unused for kinds 3-4."""
        return self.stream.SALT if self._kind == 1 else self.stream.then.SALT if self._kind == 2 else 0

    def _reset_stream(self, rows: np.ndarray, seeds: np.ndarray, episodes: np.ndarray) -> None:
        """The pattern / task / trace stream's own reset for the rows, before the kernels empty their heaps: it
        writes the stream's tensors, which the kernels read through views. A trace segment's allocation ordinals
        start at the emptied heap's clock, 0."""
        st = self.stream
        st.reset(self.heaps, torch.from_numpy(rows), torch.from_numpy(seeds), torch.from_numpy(episodes))
        if self._kind == 4:
            st.base.numpy()[rows] = 0

    def _exp_lifetimes(self) -> None:
        """Exponential lifetimes drawn this step, before the kernel runs: ``-life * torch.log1p(-u)`` with the u each
        heap's next pattern request will draw (its fourth uniform), in torch as the torch core computes it (libm's
        log1p, which compiled code calls, differs from torch's in the last bit for a few per cent of inputs). Only
        a heap's first request after a placement can give a block its lifetime, and no request of that heap comes
        before it in the step, so the counter read here is the one that request uses."""
        if self._neg_life is None:
            return
        task_id, _, _, _, keys, counters, _, _, _, life_pre = self._S()[11]
        u = np.empty(self.B, np.float64)
        _life_uniforms(task_id, keys, counters, u)
        tid = torch.from_numpy(task_id)
        torch.mul(self._neg_life[tid], torch.log1p(-torch.from_numpy(u)), out=torch.from_numpy(life_pre))

    def _draw_scripts(self, rows: np.ndarray, seeds: np.ndarray, episodes: np.ndarray) -> None:
        """``ScriptedStream.reset`` for the rows, written straight into its tables (the continuation is reseeded by
        ``_start``): Lim's bf-good / wf-good / mixed scripts drawn in compiled code (``jit_scripts``), any other
        script in Python, from the same per-row numpy Generators."""
        st = self.stream
        kind = jit_scripts.script_kind(st)
        if kind:
            return self._draw_compiled(kind, rows, seeds, episodes)
        scripts = [st.script(numpy_generator(int(s), int(e), st.SALT)) for s, e in
                   zip(seeds.tolist(), episodes.tolist(), strict=True)]
        L = max([len(sc) for sc in scripts] + [1])
        if L > st.ops.shape[1]:  # widen the tables as the stream does (zeros past each script's end)
            pad = L - st.ops.shape[1]
            st.ops = torch.nn.functional.pad(st.ops, (0, pad))
            st.sizes = torch.nn.functional.pad(st.sizes, (0, pad))
        ops, sizes = st.ops.numpy(), st.sizes.numpy()
        length, ptr, seq_base = st.length.numpy(), st.ptr.numpy(), st.seq_base.numpy()
        for b, sc in zip(rows.tolist(), scripts, strict=True):
            ops[b] = 0
            sizes[b] = 0
            if sc:
                arr = np.asarray(sc, dtype=np.int64)
                ops[b, : len(sc)] = arr[:, 0]
                sizes[b, : len(sc)] = arr[:, 1]
            length[b] = len(sc)
            ptr[b] = 0
            seq_base[b] = 0  # the heap is emptied by _start: its clock is 0

    def _draw_compiled(self, kind: int, rows: np.ndarray, seeds: np.ndarray, episodes: np.ndarray) -> None:
        st = self.stream
        if self._scratch is None:
            self._scratch = jit_scripts.ScriptDrawer(st.SALT, st.cells)
        ops_s, sizes_s, len_s = self._scratch(kind, seeds, episodes)  # [len(rows), ...] views
        L = max(int(len_s.max()) if len(rows) else 0, 1)
        if L > st.ops.shape[1]:  # widen the tables as the stream does (zeros past each script's end)
            pad = L - st.ops.shape[1]
            st.ops = torch.nn.functional.pad(st.ops, (0, pad))
            st.sizes = torch.nn.functional.pad(st.sizes, (0, pad))
        W = min(st.ops.shape[1], ops_s.shape[1])  # wider tables (a resumed state) keep zeros past W
        o, z = st.ops.numpy(), st.sizes.numpy()
        if st.ops.shape[1] > W:
            o[rows, W:], z[rows, W:] = 0, 0
        o[rows, :W] = ops_s[:, :W]
        z[rows, :W] = sizes_s[:, :W]
        st.length.numpy()[rows] = len_s
        st.ptr.numpy()[rows] = 0
        st.seq_base.numpy()[rows] = 0  # the heap is emptied by _start: its clock is 0

    def step(self, a: torch.Tensor):
        if not self._live():
            return super().step(a)
        R = self._R()
        B = self.B
        reward = np.empty(B, np.float64)
        term = np.empty(B, np.bool_)
        trunc = np.empty(B, np.bool_)
        inv = np.empty(B, np.bool_)
        inv_trunc = np.empty(B, np.bool_)
        self.placed_at = torch.empty(B, dtype=torch.long)  # a fresh tensor per step, as the torch core's
        self._exp_lifetimes()
        err, _ = _step(self._H(), R, self._S(), self._D(), self._P, a.numpy(), reward, term, trunc, inv, inv_trunc)
        self._done()
        if err:
            self._raise(err)
        facts = {}
        if self.masked:
            facts = {"invalid": torch.from_numpy(inv), "invalid_truncated": torch.from_numpy(inv_trunc)}
        return torch.from_numpy(reward), torch.from_numpy(term), torch.from_numpy(trunc), facts

    # ----------------------------------------------------------------------------------------------
    def fused_step(self, core, action, as_numpy: bool = False):
        """``Trials.step`` of ``core`` (this domain's trials wrapper) and this domain's step in two compiled passes:
        the step, counters, observation and metrics of every row, then the restart of the finished rows. Same
        results as ``Trials.step`` (tests/test_jit_env.py); ``as_numpy``: numpy arrays instead of tensors
        throughout (what the gymnasium face returns). Returns None where it does not apply (another action space,
        RL^2 or task inputs, no autoreset, a swapped stream): the caller then runs ``Trials.step``."""
        if not (self._live() and self.cfg.action == "heuristic" and core.autoreset and not core.meta_obs
                and not core.task_obs):
            return None
        ts = (core.episode, core._returns, core._lens, core.prev_action, core.prev_reward, core._starts, core.seed,
              core.needs_reset)
        cached = self.__dict__.get("_t_views")
        if cached is None or not all(map(operator.is_, cached[0], ts)):
            cached = self.__dict__["_t_views"] = (ts, tuple(t.numpy() for t in ts))
        episode_np, *_, seed_np, needs_np = cached[1]
        if needs_np.any():
            raise core._reset_error()
        a = core.check_action(action)
        B, cfg = self.B, self.cfg
        H, R, S = self._H(), self._R(), self._S()
        T = (*cached[1][:6], core.K)
        OB = (cfg.bitmap, self._scale, cfg.summary, int(cfg.hole_features), cfg.hole_order == "size")
        reward, snap_r, snap_l = np.empty(B, np.float64), np.empty((2, B), np.float64), np.empty((2, B), np.int64)
        term, trunc, inv, done, trial_end = np.empty((5, B), np.bool_)  # rows of one block: views
        obs = np.empty((B, self.obs_dim), np.float32)
        out_i, out_f = np.empty((5, B), np.int64), np.empty((3, B), np.float32)
        new_obs, new_i, new_f = np.empty_like(obs), np.empty_like(out_i), np.empty_like(out_f)
        self.placed_at = torch.empty(B, dtype=torch.long)
        D = self._D()
        self._exp_lifetimes()
        err, _ = _fused_step(H, R, S, D, self._P, T, OB, a.numpy(), reward, term, trunc, inv, done, trial_end,
                             snap_r, snap_l, obs, out_i, out_f, new_obs, new_i, new_f)
        self._done()
        if err:
            self._raise(err)
        info = self._info_from(out_i, out_f, core)
        if done.any():
            rows = np.flatnonzero(done)
            episode_np[rows] += 1
            if self._kind == 2:
                self._draw_scripts(rows, seed_np[rows], episode_np[rows])
            elif self._kind >= 3:
                self._reset_stream(rows, seed_np[rows], episode_np[rows].copy())
            err, _ = _fused_restart(H, R, self._S(), D, T, OB, rows, seed_np, self._salt(), new_obs, new_i, new_f)
            self._done()
            if err:
                self._raise(err)
            final_info = info
            final_info["trial_end"] = trial_end
            info = self._info_from(new_i, new_f, core)
            info.update(final_obs=obs, _final_obs=done.copy(), final_info=final_info, _final_info=done.copy())
            info["episode"], info["_episode"] = {"r": snap_r[0], "l": snap_l[0]}, done
            if trial_end.any():
                info["trial"], info["_trial"] = {"r": snap_r[1], "l": snap_l[1]}, trial_end.copy()
            obs = new_obs
        info["trial_end"] = trial_end
        if as_numpy:
            return obs, reward, term, trunc, info
        return torch.from_numpy(obs), torch.from_numpy(reward), torch.from_numpy(term), torch.from_numpy(trunc), \
            _as_tensors(info)

    @staticmethod
    def _metrics_info(out_i: np.ndarray, out_f: np.ndarray) -> dict:
        """``heap_metrics`` and the request, in its key order, from the ``_metrics`` kernels' arrays (numpy views)."""
        allocations, free_cells, largest_free, free_runs, request = out_i
        frag_largest, frag_runs, utilisation = out_f
        return {"allocations": allocations, "free_cells": free_cells, "largest_free": largest_free,
                "free_runs": free_runs, "frag_largest": frag_largest, "frag_runs": frag_runs,
                "utilisation": utilisation, "request": request}

    def _info_from(self, out_i: np.ndarray, out_f: np.ndarray, core) -> dict:
        """``Trials._info()`` from the kernels' metrics (heuristic space: no mask, no facts), as numpy arrays."""
        info = self._metrics_info(out_i, out_f)
        if self.task_id is not None:
            info["task_id"] = self.task_id.numpy().copy()
        return {**info, "episode_start": core.episode_start.numpy().copy(),
                "trial_start": core.trial_start.numpy().copy(), "trial_end": np.zeros(self.B, np.bool_)}

    def action_mask(self) -> torch.Tensor | None:
        if not self._live() or self.cfg.action == "heuristic":
            return super().action_mask()
        out = np.empty((self.B, self.n_actions), np.bool_)
        _masks(self._R(), self.request.numpy(), _SPACE[self.cfg.action], out)
        return torch.from_numpy(out)

    def info(self) -> dict:
        if not self._live():
            return super().info()
        out_i = np.empty((5, self.B), np.int64)
        out_f = np.empty((3, self.B), np.float32)
        _metrics(self._H(), self._R(), self.request.numpy(), out_i, out_f)
        info = _as_tensors(self._metrics_info(out_i, out_f))
        if self.task_id is not None:
            info["task_id"] = self.task_id.clone()
        return self._add_mask(info)

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        if not self._live():
            return super().observe(rows)
        cfg = self.cfg
        r = self._every if rows is None else _arr(rows)
        out = np.empty((r.shape[0], self.obs_dim), np.float32)
        _observe(self._H(), self._R(), self._D(), r, out, cfg.bitmap, self._scale, cfg.summary,
                 int(cfg.hole_features), cfg.hole_order == "size")
        return torch.from_numpy(out)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._kv = -1

    def __getstate__(self) -> dict:
        """``copy.deepcopy`` / pickle: the cached numpy views would not follow the copied tensors; rebuilt."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_h_views", "_s_views", "_d_views", "_t_views")}


_SCOPE = ("it runs Lim & Maddukuri's random, bf-good, wf-good and mixed streams, the pattern stream, task streams "
          "of pattern streams and the trace stream")


def _pattern_state(stream, B: int) -> tuple:
    """PT of the kernels (see the S comment): views of the pattern streams' own tensors, which keep being the
    state (checkpoints, resets). A task stream's sub-streams are rebound to slices of one stacked tensor per
    field, so the kernel indexes [task, heap] (again after a copy: the copied streams get a stack of their own);
    other streams get an unused placeholder of the same types."""
    if type(stream) is TaskStream and stream_kind(stream) == 3:
        subs, task_id = stream.streams, stream.task_id.numpy()
    elif type(stream) is PatternStream:
        subs, task_id = [stream], np.zeros(B, np.int64)
    else:
        subs, task_id = [], np.zeros(B, np.int64)
    if not subs:
        f = np.zeros((1, 1), np.float64)
        i = np.zeros((1, 1), np.int64)
        return (task_id, np.zeros((1, 5), np.int64), np.zeros((1, 4), np.float64), f, i, i.copy(),
                np.zeros((1, 1, 1), np.float64), i.copy(), i.copy(), np.zeros(B, np.float64))
    fields = {"key": lambda t: t.rng.key, "counter": lambda t: t.rng.counter, "death": lambda t: t.death,
              "seen": lambda t: t.seen, "drain": lambda t: t.drain}
    stacked = {}
    for name, get in fields.items():
        st = torch.stack([get(t) for t in subs])
        for k, t in enumerate(subs):  # the sub-stream now writes (in place, as it always does) into slice k
            if name in ("key", "counter"):
                setattr(t.rng, name, st[k])
            else:
                setattr(t, name, st[k])
        stacked[name] = st.numpy()
    ipar = np.array([[LIFETIMES.index(t.lifetime), ORDERS.index(t.order), PHASES.index(t.phase), t.phase_len, t._top]
                     for t in subs], np.int64)
    fpar = np.array([[t.free_prob, t.life, t.peak_keep, t.plateau_level] for t in subs], np.float64)
    cdf = np.ascontiguousarray(torch.stack([t.size_cdf for t in subs]).numpy())
    return (task_id, ipar, fpar, cdf, stacked["key"], stacked["counter"], stacked["death"], stacked["seen"],
            stacked["drain"], np.zeros(B, np.float64))


def _trace_state(stream) -> tuple:
    """TR of the kernels: the trace's event tables (int64 copies, read only) and views of the per-heap pointers."""
    if type(stream) is not TraceStream:
        i = np.zeros(1, np.int64)
        return (i, i, i, np.zeros(2, np.int64), np.zeros((1, 2), np.int64), i, i, i, i, i)
    i64 = lambda t: np.ascontiguousarray(t.numpy(), dtype=np.int64)  # noqa: E731
    return (i64(stream.op), i64(stream.size), i64(stream.ref), i64(stream.next_alloc), i64(stream.table),
            stream.start.numpy(), stream.end.numpy(), stream.ptr.numpy(), stream.base.numpy(), stream.a0.numpy())


def _arr(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy(), dtype=np.int64)


def make_domain(num_heaps: int, cfg: AllocConfig, device="cpu", jit: bool | None = None) -> AllocDomain:
    """The compiled domain where it can run this config (``jit`` None: when in scope, unless the environment
    variable ``DREAMALLOC_JIT=0`` turns it off for the whole process; True: required, an error saying why not
    otherwise; False: never), else the torch ``AllocDomain``."""
    if jit is None and os.environ.get("DREAMALLOC_JIT", "1").strip() == "0":
        jit = False
    if jit is False:
        return AllocDomain(num_heaps, cfg, device)
    why = scope_error(cfg, device)
    if why is None and not _class_in_scope(cfg.stream, dict(cfg.stream_params)):
        why = f"the compiled allocation step cannot run the {cfg.stream!r} stream ({_SCOPE})"
    if why is None:
        try:
            return JitAllocDomain(num_heaps, cfg, device)
        except ValueError as e:
            why = str(e)
    if jit:
        raise ValueError(f"jit=True: {why}")
    return AllocDomain(num_heaps, cfg, device)


__all__ = ["AVAILABLE", "JitAllocDomain", "make_domain", "scope_error", "stream_kind"]
