"""The single-heap fast path: ``FastAllocCore``, an ``AllocCore`` with B = 1 whose gymnasium face steps in plain
Python and numpy instead of torch.

Why: at B = 1 a torch op costs a few microseconds whatever its size, and one step of the batched core is a few
hundred of them (about 880 us a step); the same step written for one heap is a few dozen numpy / Python
operations. Nothing is duplicated: the fast path reads and writes the very same tensors (through numpy views of
their CPU storage), so ``core.heaps``, ``core.state_dict()``, the batched ``reset`` / ``step`` and the fast
``reset_one`` / ``step_one`` can be mixed freely. Semantics are the batched core's, row for row: the request
streams of Lim & Maddukuri (random, bf-good, wf-good, mixed) are re-implemented here on the same counter-based
random numbers; every other stream is driven through its own torch ``next`` (correct, just slower), and
episode starts go through the torch core (once an episode). ``tests/test_fast_env.py`` drives this path and the
torch core with the same seeds and actions and compares every observation, reward, flag and info value.

Cost of maintenance: a change to the step semantics in ``env.py``, ``heap/`` or ``core/trials.py``, or to
``RandomStream`` / ``ScriptedStream``, must be mirrored here; the equality test fails until it is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np
import torch

from dreamalloc.alloc import jit_scripts
from dreamalloc.alloc.env import AllocConfig, AllocDomain
from dreamalloc.alloc.heap import FreeRuns
from dreamalloc.alloc.workloads import ALLOC, FREE, FREE_ALL
from dreamalloc.alloc.workloads.base import S_ALLOC, S_FREE_ALL, S_FREE_OLDEST, ScriptedStream
from dreamalloc.alloc.workloads.lim import RandomStream
from dreamalloc.core.actions import ActionSpec
from dreamalloc.core.gym_faces import unbatch
from dreamalloc.core.rng import numpy_generator, splitmix64_int
from dreamalloc.core.trials import Trials

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_INV53 = 1.0 / (1 << 53)
_F32 = np.float32
_LONG_MAX = np.iinfo(np.int64).max


class FastAllocDomain(AllocDomain):
    """``AllocDomain`` whose free-run table is rebuilt from the bitmap whenever the heaps changed since it was
    last set (the fast path mutates the heaps without building torch run tables)."""

    @property
    def runs(self) -> FreeRuns:
        cached = self.__dict__.get("_runs_cache")
        if cached is None or cached[0] != self.heaps.version:
            cached = (self.heaps.version, FreeRuns.of(self.heaps.occ))
            self.__dict__["_runs_cache"] = cached
        return cached[1]

    @runs.setter
    def runs(self, value: FreeRuns) -> None:
        self.__dict__["_runs_cache"] = (self.heaps.version, value)


def _fast_stream(stream) -> str:
    """How the fast path drives a stream: 'random', 'scripted' (a ScriptedStream whose script runs here and
    whose continuation is fast too) or 'torch' (its own ``next``)."""
    if type(stream) is RandomStream:
        return "random"
    if isinstance(stream, ScriptedStream) and type(stream).next is ScriptedStream.next and \
            type(stream).reset is ScriptedStream.reset and \
            (stream.then is None or _fast_stream(stream.then) != "torch"):
        return "scripted"
    return "torch"


class _Cache:
    """Plain mutable state of the fast path (kept off ``Trials.__setattr__``, which forwards to the domain)."""

    __slots__ = ("ext", "runs", "runs_key", "views")

    def __init__(self, cells: int):
        self.runs, self.runs_key, self.views = ((), ()), None, {}
        self.ext = np.ones(cells + 2, np.bool_)  # the bitmap between two occupied sentinels


class FastAllocCore(Trials):
    """One heap (B = 1, CPU): the batched ``AllocCore`` API plus ``reset_one`` / ``step_one`` / ``mask_one``,
    which return what the gymnasium single env returns (numpy observation, Python scalars, unbatched info)."""

    def __init__(self, config: AllocConfig | None = None, **overrides):
        cfg = AllocConfig.from_kwargs(config, **overrides).validate()
        if cfg.on_fail != "end":
            raise ValueError(f"the one-heap fast path implements on_fail='end' only, not {cfg.on_fail!r}: use "
                             "AllocCore(1, ...) (AllocEnv picks it by itself)")
        super().__init__(FastAllocDomain(1, cfg, "cpu"), cfg.trial_episodes, cfg.meta_obs, cfg.task_obs,
                         autoreset=False, unit="heap")
        d = self.domain
        self._f_cfg = cfg
        self._f_N = cfg.cells
        self._f_rows = torch.zeros(1, dtype=torch.long)
        self._bind()
        self._f_scale = _F32(1.0 if cfg.size_scale == "raw" else 1.0 / cfg.cells)
        self._f_alloc_r, self._f_invalid_r = float(cfg.alloc_reward), float(cfg.invalid_reward)
        self._f_masked = cfg.action != "heuristic"
        self._f_task = d.task_id is not None
        self._f_segment = getattr(d.stream, "segment", None) is not None  # in-episode switches (shift, regimes)
        self._f_byN = [float(_F32(i) / _F32(cfg.cells)) for i in range(cfg.cells + 1)]  # i / N in float32
        self._f_frag = {}  # (largest, free) -> frag_largest in float32
        spec = d.action_spec
        self._f_spec = ActionSpec(spec.n, None, "cpu", "env", spec.space, spec.names)  # one integer

    _DERIVED = ("_f", "_c", "_f_next", "_f_reset")  # views and closures over this core's tensors: rebuilt on copy

    def _bind(self) -> None:
        """Views of the tensors' memory, the run cache and the stream closures (after building or unpickling)."""
        d, h = self.domain, self.domain.heaps
        v = lambda t: t.numpy()[0] if t.ndim == 2 else t.numpy()  # noqa: E731  (row 0 / the [1] vector)
        self._f = dict(
            occ=v(h.occ), owner=v(h.owner), bstart=v(h.block_start), bsize=v(h.block_size), bseq=v(h.block_seq),
            live=v(h.live), perm=v(h.perm), pos=v(h.pos), n_live=v(h.n_live), used=v(h.used),
            n_allocs=v(h.n_allocs), rover=v(h.rover), request=v(d.request), hist=v(d.hist),
            n_invalid=v(d.n_invalid), freed=v(d.freed), seed=v(self.seed), episode=v(self.episode),
            ep_return=v(self.ep_return), ep_len=v(self.ep_len), trial_return=v(self.trial_return),
            trial_len=v(self.trial_len), needs_reset=v(self.needs_reset), prev_action=v(self.prev_action),
            prev_reward=v(self.prev_reward), episode_start=v(self.episode_start), trial_start=v(self.trial_start))
        # single values and the per-slot tables are read and written element by element through memoryviews of
        # the same memory (a few times cheaper per element than numpy scalars); slices go through numpy
        for k in ("n_live", "used", "n_allocs", "rover", "request", "n_invalid", "freed", "seed", "episode",
                  "ep_return", "ep_len", "trial_return", "trial_len", "needs_reset", "prev_action", "prev_reward",
                  "episode_start", "trial_start"):
            self._f[k] = memoryview(self._f[k])
        for k in ("perm", "pos", "bstart", "bsize", "bseq", "live"):
            self._f[k + "_m"] = memoryview(self._f[k])
        self._c = _Cache(self._f_N)
        self._f_next = self._build_next(d.stream)
        self._f_reset = self._build_reset(d.stream)

    def __getstate__(self) -> dict:
        """``copy.deepcopy``: the tensors and settings; the views are rebuilt on the copy."""
        return {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()

    # ----------------------------------------------------------------------------------------------
    # numpy views of tensors that a stream may replace (a scripted stream pads its script on reset)
    def _view(self, t: torch.Tensor) -> np.ndarray:
        got = self._c.views.get(id(t))
        if got is None or got[0] is not t:
            got = (t, t.numpy())
            self._c.views[id(t)] = got
        return got[1]

    def _free_runs(self) -> tuple[list, list]:
        """(starts, lengths) of the heap's maximal free runs in address order, rebuilt when the heap changed."""
        c = self._c
        key = self.domain.heaps.version
        if key != c.runs_key:
            ext = c.ext
            ext[1:-1] = self._f["occ"]
            e = np.not_equal(ext[1:], ext[:-1]).nonzero()[0].tolist()
            starts = e[0::2]
            c.runs = (starts, [b - a for a, b in zip(starts, e[1::2], strict=True)])
            c.runs_key = key
        return c.runs

    # ----------------------------------------------------------------------------------------------
    # heap mutations (mirror HeapBatch._place / _release / _clear for row 0)
    def _place(self, addr: int, size: int) -> None:
        f = self._f
        k = int(f["n_live"][0])
        slot = f["perm_m"][k]
        f["n_live"][0] = k + 1
        f["bstart_m"][slot] = addr
        f["bsize_m"][slot] = size
        f["bseq_m"][slot] = f["n_allocs"][0]
        f["live_m"][slot] = True
        f["n_allocs"][0] += 1
        f["used"][0] += size
        f["rover"][0] = (addr + size) % self._f_N
        f["owner"][addr: addr + size] = slot
        f["occ"][addr: addr + size] = True
        heaps, c = self.domain.heaps, self._c
        if c.runs_key == heaps.version:  # the run table is current: cut the block out of its run
            starts, lengths = c.runs
            i = bisect_right(starts, addr) - 1
            left, after = addr - starts[i], addr + size
            right = starts[i] + lengths[i] - after
            if left and right:
                lengths[i] = left
                starts.insert(i + 1, after)
                lengths.insert(i + 1, right)
            elif left:
                lengths[i] = left
            elif right:
                starts[i], lengths[i] = after, right
            else:
                del starts[i], lengths[i]
            c.runs_key = heaps.version + 1
        heaps.version += 1

    def _release(self, slot: int) -> None:
        f = self._f
        start, size = f["bstart_m"][slot], f["bsize_m"][slot]
        f["owner"][start: start + size] = -1
        f["occ"][start: start + size] = False
        heaps, c = self.domain.heaps, self._c
        if c.runs_key == heaps.version:  # the run table is current: merge the block with free neighbours
            starts, lengths = c.runs
            j = bisect_left(starts, start)
            lo, hi, end = j, j, start + size
            a = start
            if j > 0 and starts[j - 1] + lengths[j - 1] == start:
                lo, a = j - 1, starts[j - 1]
            if j < len(starts) and starts[j] == end:
                hi, end = j + 1, end + lengths[j]
            starts[lo: hi] = [a]
            lengths[lo: hi] = [end - a]
            c.runs_key = heaps.version + 1
        f["live_m"][slot] = False
        f["bseq_m"][slot] = -1
        f["used"][0] -= size
        perm, pos = f["perm_m"], f["pos_m"]
        p = pos[slot]
        k = int(f["n_live"][0]) - 1
        last = perm[k]
        perm[p] = last
        pos[last] = p
        perm[k] = slot
        pos[slot] = k
        f["n_live"][0] = k
        heaps.version += 1

    def _clear(self) -> None:
        f = self._f
        f["owner"][:] = -1
        f["occ"][:] = False
        f["live"][:] = False
        f["bseq"][:] = -1
        f["n_live"][0] = 0
        f["used"][0] = 0
        heaps = self.domain.heaps
        heaps.version += 1
        self._c.runs, self._c.runs_key = ([0], [self._f_N]), heaps.version

    # ----------------------------------------------------------------------------------------------
    # request streams: for each, a function () -> (op, size, block) and a function (seed, episode) -> None
    def _build_next(self, stream):
        kind = _fast_stream(stream)
        if kind == "random":
            key, counter = stream.rng.key.numpy(), stream.rng.counter.numpy()  # written in place only
            return lambda: self._random_next(stream, key, counter)
        if kind == "scripted":
            then = None if stream.then is None else self._build_next(stream.then)
            ptr, length, seq_base = stream.ptr.numpy(), stream.length.numpy(), stream.seq_base.numpy()
            script = [None, None, None, None]  # ops tensor, ops row, sizes row, sizes tensor: reset may pad them
            return lambda: self._scripted_next(stream, then, ptr, length, seq_base, script)

        def torch_next():
            req = stream.next(self.domain.heaps, self._f_rows)
            return int(req.op[0]), int(req.size[0]), int(req.block[0])
        return torch_next

    def _build_reset(self, stream):
        kind = _fast_stream(stream)
        if kind == "random":
            return lambda seed, episode: self._random_reset(stream, seed, episode)
        if kind == "scripted":
            then = None if stream.then is None else self._build_reset(stream.then)
            return lambda seed, episode: self._scripted_reset(stream, then, seed, episode)

        def torch_reset(seed, episode):
            stream.reset(self.domain.heaps, self._f_rows, torch.tensor([seed]), torch.tensor([episode]))
        return torch_reset

    def _random_reset(self, stream, seed: int, episode: int) -> None:
        """``CounterRNG.reseed`` with ``rng.stream_key`` in Python integers."""
        x = (seed & _MASK64) ^ ((stream.SALT * 0x632BE59BD9B4E019) & _MASK64)
        key = splitmix64_int((splitmix64_int(x) + episode) & _MASK64)
        self._view(stream.rng.key)[0] = key - (1 << 64) if key >= 1 << 63 else key
        self._view(stream.rng.counter)[0] = 0

    def _random_next(self, stream, key: np.ndarray, counter: np.ndarray) -> tuple[int, int, int]:
        k0, c = int(key[0]) & _MASK64, int(counter[0])
        counter[0] = c + 3
        u_op = (splitmix64_int((k0 + c * _GOLDEN) & _MASK64) >> 11) * _INV53
        u_block = (splitmix64_int((k0 + (c + 1) * _GOLDEN) & _MASK64) >> 11) * _INV53
        u_size = (splitmix64_int((k0 + (c + 2) * _GOLDEN) & _MASK64) >> 11) * _INV53
        n = int(self._f["n_live"][0])
        if u_op < stream.free_prob and n > 0:
            k = min(int(u_block * n), self._f_N - 1)
            return FREE, 0, self._f["perm_m"][k]
        return ALLOC, stream.size_min + int(u_size * (stream.size_max - stream.size_min + 1)), -1

    def _scripted_reset(self, stream, then, seed: int, episode: int) -> None:
        """``ScriptedStream.reset`` for row 0 (the script padded with zeros to the table's width); Lim's scripts
        are drawn in compiled code (``jit_scripts``, the same draws) where numba is there."""
        kind = jit_scripts.script_kind(stream)
        if kind:
            drawer = self.__dict__.get("_drawer")
            if drawer is None or drawer.salt != stream.SALT or drawer.cells != stream.cells:
                drawer = self.__dict__["_drawer"] = jit_scripts.ScriptDrawer(stream.SALT, stream.cells)
            s64 = seed & _MASK64
            d_ops, d_sizes, d_len = drawer(kind, np.array([s64 - (1 << 64) if s64 >> 63 else s64], np.int64),
                                           np.array([episode], np.int64))
            L = int(d_len[0])
            script_ops, script_sizes = d_ops[0, :L], d_sizes[0, :L]
        else:
            script = stream.script(numpy_generator(seed, episode, stream.SALT))
            L = len(script)
            script_ops, script_sizes = [s[0] for s in script], [s[1] for s in script]
        if L > stream.ops.shape[1]:
            pad = L - stream.ops.shape[1]
            stream.ops = torch.nn.functional.pad(stream.ops, (0, pad))
            stream.sizes = torch.nn.functional.pad(stream.sizes, (0, pad))
        ops, sizes = self._view(stream.ops), self._view(stream.sizes)
        ops[0] = 0
        sizes[0] = 0
        if L:
            ops[0, :L] = script_ops
            sizes[0, :L] = script_sizes
        self._view(stream.length)[0] = L
        self._view(stream.ptr)[0] = 0
        self._view(stream.seq_base)[0] = self._f["n_allocs"][0]
        if then is not None:
            then(seed, episode)

    def _scripted_next(self, stream, then, ptr: np.ndarray, length: np.ndarray, seq_base: np.ndarray,
                       script: list) -> tuple[int, int, int]:
        p = int(ptr[0])
        if p >= int(length[0]):
            if then is None:
                raise RuntimeError(f"{type(stream).__name__} ran out of script and has no continuation stream")
            return then()
        if script[0] is not stream.ops or script[3] is not stream.sizes:
            script[:] = [stream.ops, memoryview(stream.ops.numpy()[0]), memoryview(stream.sizes.numpy()[0]),
                         stream.sizes]
        s_op, s_size = script[1][p], script[2][p]
        ptr[0] = p + 1
        f = self._f
        if p == 0:
            seq_base[0] = f["n_allocs"][0]
        if s_op == S_ALLOC:
            return ALLOC, s_size, -1
        if s_op == S_FREE_ALL:
            return FREE_ALL, 0, -1
        live = f["live"]
        if s_op == S_FREE_OLDEST:
            if int(f["n_live"][0]) == 0:
                return FREE, 0, -1
            return FREE, 0, int(np.where(live, f["bseq"], _LONG_MAX).argmin())
        hit = np.flatnonzero(live & (f["bseq"] == int(seq_base[0]) + s_size))  # FREE_SEQ
        return FREE, 0, int(hit[0]) if hit.size else -1

    def _advance(self) -> None:
        """Apply the stream's frees until an allocation request is pending (``AllocDomain._advance``)."""
        f, nxt, N = self._f, self._f_next, self._f_N
        for _ in range(4 * N + 16):
            op, size, block = nxt()
            if op == ALLOC:
                if not 1 <= size <= N:
                    raise ValueError(f"request size must lie in [1, {N}] (the heap size), got {size}")
                f["request"][0] = size
                return
            if op == FREE and block >= 0:
                self._release(block)
                f["freed"][0] = True
            elif op == FREE_ALL:
                self._clear()
                f["freed"][0] = True
        raise RuntimeError(f"stream {self._f_cfg.stream!r} issued {4 * N + 16} requests in a row without an "
                           "allocation; a stream must keep allocating")

    def _place_and_advance(self, addr: int) -> None:
        f, cfg = self._f, self._f_cfg
        size = int(f["request"][0])
        self._place(addr, size)
        f["freed"][0] = False
        if cfg.history:
            hist = f["hist"]
            hist[1:] = hist[:-1].copy()
            hist[0] = size
        self._advance()
        if cfg.ideal:
            starts, lengths = self._free_runs()
            req = int(f["request"][0])
            if max(lengths, default=0) < req and self._f_N - int(f["used"][0]) >= req:
                self.domain.heaps._compact(self._f_rows)

    # ----------------------------------------------------------------------------------------------
    # placement rules (``heap.heuristics.choose_run`` for one heap)
    def _rule_address(self, rule: str, size: int) -> int:
        starts, lengths = self._free_runs()
        best = -1
        if rule == "first":
            for i, ln in enumerate(lengths):
                if ln >= size:
                    best = i
                    break
        elif rule == "best":
            bl = None
            for i, ln in enumerate(lengths):
                if ln >= size and (bl is None or ln < bl):
                    best, bl = i, ln
        elif rule == "worst":
            bl = None
            for i, ln in enumerate(lengths):
                if ln >= size and (bl is None or ln > bl):
                    best, bl = i, ln
        elif rule == "second":
            seen = 0
            for i, ln in enumerate(lengths):
                if ln >= size:
                    seen += 1
                    if seen == 1:
                        best = i
                    else:
                        best = i
                        break
        else:  # next: the first fitting run ending after the rover, else the first fitting run
            rover = int(self._f["rover"][0])
            wrap = -1
            for i, (st, ln) in enumerate(zip(starts, lengths, strict=True)):
                if ln >= size:
                    if st + ln > rover:
                        best = i
                        break
                    if wrap < 0:
                        wrap = i
            if best < 0:
                best = wrap
        if best < 0:
            return -1
        return starts[best] if self._f_cfg.align == "start" else starts[best] + lengths[best] - size

    def _decode(self, a: int) -> int:
        """The start address action ``a`` places the request at; -1 where it is invalid."""
        cfg, size = self._f_cfg, int(self._f["request"][0])
        if cfg.action == "heuristic":
            return self._rule_address(cfg.heuristics[a], size)
        starts, lengths = self._free_runs()
        if cfg.action == "address":
            for st, ln in zip(starts, lengths, strict=True):
                if st <= a and st + ln >= a + size:
                    return a
            return -1
        holes = self._holes(starts, lengths, size, a + 1)
        if len(holes) <= a:
            return -1
        st, ln = holes[a]
        return st if cfg.align == "start" else st + ln - size

    def _holes(self, starts, lengths, size: int, k: int) -> list[tuple[int, int]]:
        """(start, length) of the first ``k`` runs that fit ``size``, in the config's ``hole_order``."""
        if self._f_cfg.hole_order == "size":
            fit = sorted((ln, st) for st, ln in zip(starts, lengths, strict=True) if ln >= size)[:k]
            return [(st, ln) for ln, st in fit]
        out = []
        for st, ln in zip(starts, lengths, strict=True):
            if ln >= size:
                out.append((st, ln))
                if len(out) == k:
                    break
        return out

    def _placement_reward(self, fits: bool) -> float:
        if fits:
            return self._f_alloc_r
        rule = self._f_cfg.terminal_reward
        if rule == "lim":
            return self._f_alloc_r if bool(self._f["freed"][0]) else 0.0
        return 0.0 if rule == "zero" else self._f_alloc_r

    # ----------------------------------------------------------------------------------------------
    def _check_one(self, action) -> int:
        t = type(action)
        if t is int or (isinstance(action, np.integer)):
            a = int(action)
            if 0 <= a < self.domain.n_actions:
                return a
        return int(self._f_spec(action)[0])  # the full check: an ActionError naming what is wrong

    def step_one(self, action):
        """One step of the heap: (obs float32 [D], reward, terminated, truncated, info) as ``gym.Env.step``."""
        f, cfg = self._f, self._f_cfg
        if f["needs_reset"][0]:
            raise self._reset_error()
        a = self._check_one(action)
        addr = self._decode(a)
        valid = addr >= 0
        if valid:
            self._place_and_advance(addr)
        largest = max(self._free_runs()[1], default=0)
        fits = largest >= int(f["request"][0])
        reward = self._placement_reward(fits) if valid else self._f_invalid_r
        if cfg.skip_forced and valid and fits:
            reward, fits = self._skip_forced(reward)
        terminated = valid and not fits
        truncated = valid and fits and int(f["n_allocs"][0]) >= cfg.max_allocs
        invalid = invalid_trunc = False
        if self._f_masked:
            invalid = not valid
            if invalid:
                f["n_invalid"][0] += 1
            invalid_trunc = invalid and int(f["n_invalid"][0]) >= cfg.max_invalid
            truncated = truncated or invalid_trunc
        f["ep_return"][0] += reward
        f["ep_len"][0] += 1
        f["trial_return"][0] += reward
        f["trial_len"][0] += 1
        f["prev_action"][0] = a
        f["prev_reward"][0] = reward
        f["episode_start"][0] = False
        f["trial_start"][0] = False
        done = terminated or truncated
        trial_end = done and int(f["episode"][0]) % self.K == self.K - 1
        info = self._info_one()
        if self._f_masked:
            info["invalid"], info["invalid_truncated"] = invalid, invalid_trunc
        obs = self._observe_one()
        if done:
            info["episode"] = {"r": float(f["ep_return"][0]), "l": int(f["ep_len"][0])}
            if trial_end:
                info["trial"] = {"r": float(f["trial_return"][0]), "l": int(f["trial_len"][0])}
            f["needs_reset"][0] = True
        info["trial_end"] = trial_end
        return obs, reward, terminated, truncated, info

    def _skip_forced(self, reward: float) -> tuple[float, bool]:
        """``AllocDomain._skip_forced`` for one heap: the env places the requests on which every rule agrees."""
        f, cfg = self._f, self._f_cfg
        fits = True
        while int(f["n_allocs"][0]) < cfg.max_allocs:
            size = int(f["request"][0])
            addrs = [self._rule_address(rule, size) for rule in cfg.heuristics]
            if any(x != addrs[0] for x in addrs[1:]):
                break
            self._place_and_advance(addrs[0])
            fits = max(self._free_runs()[1], default=0) >= int(f["request"][0])
            reward += self._placement_reward(fits)
            if not fits:
                break
        return reward, fits

    def reset_one(self, seed: int | None = None):
        """Start the next episode (a new trial with ``seed``): (obs float32 [D], info), as ``gym.Env.reset``
        (``Trials.reset`` then ``AllocDomain.start`` for row 0)."""
        f = self._f
        if seed is not None and not (type(seed) is int and -(1 << 63) <= seed < 1 << 63):
            obs, info = self.reset([seed])  # numpy integers, out-of-range seeds: the batched core's checks
            return obs[0].numpy(force=True), unbatch(info)
        if seed is not None:
            f["seed"][0] = seed
            f["episode"][0] = 0
        else:
            if f["episode"][0] < 0:
                f["seed"][0] = np.random.SeedSequence().generate_state(1, np.uint32)[0].item()
            f["episode"][0] += 1
        episode = int(f["episode"][0])
        opens = episode % self.K == 0
        self._clear()  # AllocDomain.start: empty heap, fresh counters, the stream's episode up to its request
        f["n_allocs"][0] = 0
        f["rover"][0] = 0
        f["hist"][:] = -1
        f["n_invalid"][0] = 0
        self._f_reset(int(f["seed"][0]), episode)
        self._advance()
        f["ep_return"][0] = 0.0
        f["ep_len"][0] = 0
        f["needs_reset"][0] = False
        f["episode_start"][0] = True
        f["trial_start"][0] = opens
        if opens:
            f["prev_action"][0] = -1
            f["prev_reward"][0] = 0.0
            f["trial_return"][0] = 0.0
            f["trial_len"][0] = 0
        return self._observe_one(), self._info_one()

    # ----------------------------------------------------------------------------------------------
    def mask_one(self) -> np.ndarray | None:
        """[n_actions] bool of the valid actions now; None in the heuristic space (every action is valid)."""
        cfg = self._f_cfg
        if cfg.action == "heuristic":
            return None
        size = int(self._f["request"][0])
        starts, lengths = self._free_runs()
        if cfg.action == "address":
            m = np.zeros(self._f_N, np.bool_)
            for st, ln in zip(starts, lengths, strict=True):
                if ln >= size:
                    m[st: st + ln - size + 1] = True
            return m
        n_fit = sum(1 for ln in lengths if ln >= size)
        return np.arange(cfg.holes) < n_fit

    def _frag(self, largest: int, free: int) -> float:
        """1 - largest / free in float32 (0 with nothing free), as the torch metrics compute it."""
        if free <= 0:
            return 0.0
        got = self._f_frag.get((largest, free))
        if got is None:
            if len(self._f_frag) >= 1 << 16:  # bounded: large heaps reach many (largest, free) pairs
                self._f_frag.clear()
            got = self._f_frag[(largest, free)] = float(_F32(1.0) - _F32(largest) / _F32(free))
        return got

    def _info_one(self) -> dict:
        """``Trials._info()`` of row 0, unbatched (the keys in the same order)."""
        f, N = self._f, self._f_N
        starts, lengths = self._free_runs()
        used = int(f["used"][0])
        free, largest, n_runs = N - used, max(lengths, default=0), len(starts)
        info = {
            "allocations": f["n_allocs"][0],
            "free_cells": free,
            "largest_free": largest,
            "free_runs": n_runs,
            "frag_largest": self._frag(largest, free),
            "frag_runs": self._f_byN[n_runs] if 0 < free < N else 0.0,  # runs <= N / 2: no clipping needed
            "utilisation": self._f_byN[used],
            "request": f["request"][0],
        }
        if self._f_task:
            info["task_id"] = int(self._view(self.domain.task_id)[0])
        if self._f_segment:
            info["segment"] = int(self._view(self.domain.stream.segment)[0])
        if self._f_masked:
            info["action_mask"] = self.mask_one()
            info["n_invalid"] = int(f["n_invalid"][0])
            info["invalid"] = info["invalid_truncated"] = False
        info["episode_start"] = bool(f["episode_start"][0])
        info["trial_start"] = bool(f["trial_start"][0])
        info["trial_end"] = False
        return info

    def _observe_one(self) -> np.ndarray:
        """``Trials.observe()`` of row 0 as a float32 vector, bit for bit."""
        f, cfg, N = self._f, self._f_cfg, self._f_N
        out = np.empty(self.spec.obs_dim, np.float32)
        scale = self._f_scale
        i = 0
        if cfg.bitmap:
            out[:N] = f["occ"]
            i = N
        out[i] = _F32(f["request"][0]) * scale
        i += 1
        if cfg.history:
            h = f["hist"].astype(np.float32)
            out[i: i + cfg.history] = np.where(h < 0, _F32(-1.0), h * scale)
            i += cfg.history
        starts, lengths = None, None
        if cfg.summary:
            starts, lengths = self._free_runs()
            free, largest, byN = N - f["used"][0], max(lengths, default=0), self._f_byN
            out[i: i + 4] = (byN[free], byN[largest], byN[len(starts)], self._frag(largest, free))
            i += 4
        if cfg.hole_features:
            starts, lengths = self._free_runs()
            size, k = int(f["request"][0]), cfg.hole_features
            feats = np.zeros(2 * k, np.float32)
            for j, (st, ln) in enumerate(self._holes(starts, lengths, size, k)):
                feats[2 * j], feats[2 * j + 1] = self._f_byN[st], self._f_byN[ln]
            out[i: i + 2 * k] = feats
            i += 2 * k
        if self.meta_obs:
            k = self.domain.n_actions
            out[i: i + k] = 0.0
            pa = int(f["prev_action"][0])
            if pa >= 0:
                out[i + pa] = 1.0
            out[i + k] = f["prev_reward"][0]
            out[i + k + 1] = 1.0 if f["episode_start"][0] else 0.0
            i += k + 2
        if self.task_obs:
            out[i:] = 0.0
            out[i + int(self._view(self.domain.task_id)[0])] = 1.0
        return out


__all__ = ["FastAllocCore", "FastAllocDomain"]
