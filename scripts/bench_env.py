"""Throughput of the native batched env against gymnasium's SyncVectorEnv of single-heap envs.

Counts heap-steps per second (vector steps x num_envs) of

  (a) ``AllocVectorEnv(num_envs=B, cells=N, stream="random", action="heuristic")`` (built-in SAME_STEP
      autoreset), and
  (b) ``SyncVectorEnv([lambda: AllocEnv(cells=N, stream="random", action="heuristic")] * B,
      autoreset_mode=SAME_STEP)``,

both reset once with seed 0 and stepped with random heuristic actions (uniform in {0, .., n_actions - 1}
per heap, drawn up front so that drawing them costs nothing in the timed loop). Each measurement warms up,
then steps until at least ``--seconds`` of wall time have passed (time.perf_counter).

    python scripts/bench_env.py                      # B=1024, N in 64,256,1024,4096 (a few minutes)
    python scripts/bench_env.py --quick              # smoke test
    python scripts/bench_env.py --profile 256        # cProfile of native steps at N=256 (no table)
    python scripts/bench_env.py --env load_balance   # LoadBalanceVectorEnv vs SyncVectorEnv of LoadBalanceEnv
                                                     # (Park's defaults; --cells is then jobs per episode)
    python scripts/bench_env.py --streams random,trace:python_json,trace:sqlite_insert,trace:sort_gpl --cells 256
                                                     # native env per request stream, ratio to the first
    python scripts/bench_env.py --streams random,pattern,suite:traces,trace:gcc_cc1 --cells 1024,4096 --batch 16 \
        --vs-torch                                   # ... and each against the torch core (jit=False)
    python scripts/bench_env.py --single             # the single env (B = 1, gym.make) against references
    python scripts/bench_env.py --single --peer PATH # ... and against Lim & Maddukuri's env in a checkout at PATH

The last line is ``speedup_vs_sync_vector_env: X`` (the speedup at N=256, or at the first N measured).

``--single`` times ``gym.make("dreamalloc/Alloc-v0", cells=N, stream="mixed", action="heuristic")`` (N = 256
unless ``--cells`` names one size) stepping random heuristic actions and resetting where an episode ends (so the
figure includes observation building, info and episode starts), against, in the same run: the same env on the
batched torch core (``fast=False, jit=False``); ``RefPageEnv``, a pure-Python / numpy single heap written here in the
manner of Lim & Maddukuri's ``StableBaselineEnvHistory`` (bitmap page, a free list rebuilt after every change,
placement-rule objects built per step, numpy draws per request) so a ratio is printed without their code; and,
with ``--peer PATH``, their env itself (``environments/stable_baselines_env_history.py`` under PATH, the
``mixed_ff_bad_wf_good`` stream). Its last lines are ``single_env_us_per_step``,
``single_env_speedup_vs_torch_core``, ``single_env_speedup_vs_reference`` and, with ``--peer``,
``reference_vs_peer`` and ``single_env_speedup_vs_peer``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym  # noqa: E402
from gymnasium.vector import AutoresetMode, SyncVectorEnv  # noqa: E402

from dreamalloc.alloc import AllocCore, AllocEnv, AllocVectorEnv  # noqa: E402
from dreamalloc.alloc.workloads.lim import bf_good_script, wf_good_script  # noqa: E402
from dreamalloc.loadbalance import LoadBalanceEnv, LoadBalanceVectorEnv  # noqa: E402

ENV_KW = {"stream": "random", "action": "heuristic"}
HEADLINE_N = 256
ENV = {"kind": "alloc"}  # --env: alloc (N = heap cells) or load_balance (N = jobs per episode)
N_ACTION_POOL = 64  # distinct pre-drawn action vectors, cycled


def action_pool(batch: int, n_actions: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, n_actions, size=(N_ACTION_POOL, batch), dtype=np.int64))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(env: gym.vector.VectorEnv, batch: int, seconds: float, warmup: int, min_steps: int = 1,
               device: str = "cpu") -> dict:
    """Reset once (seed 0), ``warmup`` untimed steps, then step until ``seconds`` have passed."""
    pool = action_pool(batch, int(env.single_action_space.n))
    env.reset(seed=0)
    i = 0
    for _ in range(warmup):
        env.step(pool[i % N_ACTION_POOL])
        i += 1
    _sync(device)
    steps, episodes = 0, 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds or steps < min_steps:
        _, _, term, trunc, _ = env.step(pool[i % N_ACTION_POOL])
        i += 1
        steps += 1
        episodes += int(np.count_nonzero(term | trunc))
        _sync(device)
        elapsed = time.perf_counter() - t0
    return {"vector_steps": steps, "seconds": elapsed, "heap_steps_per_s": steps * batch / elapsed,
            "us_per_vector_step": 1e6 * elapsed / steps, "episodes": episodes}


def make_native(batch: int, cells: int, device: str) -> AllocVectorEnv | LoadBalanceVectorEnv:
    if ENV["kind"] == "load_balance":
        return LoadBalanceVectorEnv(num_envs=batch, num_jobs=cells, device=device)
    return AllocVectorEnv(num_envs=batch, cells=cells, device=device, **ENV_KW)


def make_sync(batch: int, cells: int) -> SyncVectorEnv:
    fn = lambda: (LoadBalanceEnv(num_jobs=cells) if ENV["kind"] == "load_balance" else AllocEnv(cells=cells,
                                                                                               **ENV_KW))
    return SyncVectorEnv([fn] * batch, autoreset_mode=AutoresetMode.SAME_STEP)


def bench_native(batch: int, cells: int, seconds: float, device: str) -> dict:
    env = make_native(batch, cells, device)
    try:
        return time_steps(env, batch, seconds, warmup=20, min_steps=10, device=device)
    finally:
        env.close()


def bench_sync(batch: int, cells: int, seconds: float) -> dict:
    t0 = time.perf_counter()
    env = make_sync(batch, cells)
    build = time.perf_counter() - t0
    try:
        r = time_steps(env, batch, seconds, warmup=2, min_steps=3)
    finally:
        env.close()
    r["build_seconds"] = build
    return r


def stream_kwargs(spec: str) -> dict:
    """``random`` / ``mixed`` / ``pattern`` / ... (a stream name), ``trace:NAME`` (a shipped trace or a trace file)
    or ``suite:NAME`` (the training tasks of conf/suite/NAME.yaml as one task stream, e.g. ``suite:traces``: the
    synthetic program profiles)."""
    if spec.startswith("trace:"):
        return {"stream": "trace", "stream_params": {"path": spec.split(":", 1)[1]}, "action": "heuristic"}
    if spec.startswith("suite:"):
        from omegaconf import OmegaConf

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "suite",
                            spec.split(":", 1)[1] + ".yaml")
        if not os.path.exists(path):
            raise SystemExit(f"bench_env: no suite {spec.split(':', 1)[1]!r} ({path} does not exist)")
        train = OmegaConf.to_container(OmegaConf.load(path)["train"], resolve=True)
        return {"stream": "tasks", "stream_params": {"tasks": train}, "action": "heuristic"}
    return {"stream": spec, "action": "heuristic"}


def bench_streams(specs: list[str], batch: int, cells: list[int], seconds: float, device: str,
                  vs_torch: bool = False) -> float:
    """Native env steps/s per request stream, and each stream's ratio to the first (the reference, measured in
    the same run). Returns the smallest ratio; with ``vs_torch`` each stream is also timed on the torch core
    (``jit=False``) and the smallest speedup of the default (compiled where in scope) env over it is returned."""
    rows = []
    for n in cells:
        for spec in specs:
            row = [n, spec]
            for jit in ((None, False) if vs_torch else (None,)):
                env = AllocVectorEnv(num_envs=batch, cells=n, device=device, jit=jit, **stream_kwargs(spec))
                try:
                    r = time_steps(env, batch, seconds, warmup=20, min_steps=10, device=device)
                finally:
                    env.close()
                print(f"  N={n} {spec}{' (torch core)' if jit is False else ''}: {r['vector_steps']} vector steps "
                      f"in {r['seconds']:.2f} s, {r['episodes']} episodes ended", flush=True)
                row.append(r["heap_steps_per_s"])
            rows.append(row)
    print()
    extra = " | torch core steps/s | speedup vs torch core" if vs_torch else ""
    print(f"| N | stream | native steps/s | ratio to {specs[0]}{extra} |")
    print("|---:|---|---:|---:|" + ("---:|---:|" if vs_torch else ""))
    worst, worst_torch = float("inf"), float("inf")
    for n, spec, sps, *torch_sps in rows:
        ref = next(r[2] for r in rows if r[0] == n and r[1] == specs[0])
        worst = min(worst, sps / ref) if spec != specs[0] else worst
        cells_torch = ""
        if vs_torch:
            worst_torch = min(worst_torch, sps / torch_sps[0])
            cells_torch = f" {torch_sps[0]:,.0f} | {sps / torch_sps[0]:.1f}x |"
        print(f"| {n} | {spec} | {sps:,.0f} | {sps / ref:.2f}x |{cells_torch}")
    print(f"load average (1, 5, 15 min) at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if vs_torch:
        print(f"min_speedup_vs_torch_core: {worst_torch:.1f}")
    return worst


def profile_native(batch: int, cells: int, steps: int, device: str, top: int = 15) -> str:
    """cProfile of ``steps`` native vector steps after a warm-up, sorted by tottime."""
    env = make_native(batch, cells, device)
    pool = action_pool(batch, int(env.single_action_space.n))
    env.reset(seed=0)
    for i in range(20):
        env.step(pool[i % N_ACTION_POOL])
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(steps):
        env.step(pool[i % N_ACTION_POOL])
    prof.disable()
    wall = time.perf_counter() - t0
    env.close()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    head = (f"cProfile: {steps} native vector steps, B={batch}, N={cells}, device={device}: "
            f"{1e3 * wall / steps:.2f} ms/step under the profiler\n")
    return head + buf.getvalue()


# ------------------------------------------------------------------------------------------------------
# the single env (B = 1) against references


class RefPageEnv:
    """A single heap in plain Python and numpy, written to cost what Lim & Maddukuri's history env costs per step
    (it is not their code): a uint8 bitmap, a free list of dicts rebuilt with numpy after every allocation and
    free, a dict of live blocks, placement-rule objects built at every step, the best / worst rules sorting the
    free list, a mixed script (bf-good / wf-good, everything freed between) and then the random stream drawing
    each request with ``np.random.choice``, the observation concatenated afresh. Actions 0/1/2 = best / worst /
    first; an episode ends when the next request fits nowhere or after 2 N allocations."""

    class _Rule:
        def __init__(self, kind: str):
            self.kind = kind

        def address(self, free_list: list[dict], size: int) -> int:
            if self.kind == "first":
                runs = free_list
            else:
                runs = sorted(free_list, key=lambda r: r["size"], reverse=self.kind == "worst")
            for r in runs:
                if r["size"] >= size:
                    return r["idx"]
            return -1

    def __init__(self, cells: int = 256, free_prob: float = 0.4, sizes=(1, 2, 3, 4, 5)):
        self.cells, self.free_prob, self.sizes = cells, free_prob, list(sizes)
        self.probs = [1.0 / len(sizes)] * len(sizes)
        self.horizon = 2 * cells
        self.rand = random.Random(0)

    def _rebuild(self) -> None:
        edges = np.abs(np.diff(np.concatenate(([1], self.bitmap, [1])).astype(int)))
        spans = np.where(edges == 1)[0].reshape(-1, 2)
        self.free_list = [{"idx": int(a), "size": int(b - a)} for a, b in spans]

    def _alloc(self, addr: int, size: int) -> bool:
        if addr < 0 or addr + size > self.cells or not np.all(self.bitmap[addr: addr + size] == 0):
            return False
        self.bitmap[addr: addr + size] = 1
        self.live[addr] = size
        self.order.append(addr)
        self._rebuild()
        return True

    def _free(self, addr: int) -> None:
        size = self.live.pop(addr)
        self.order.remove(addr)
        self.bitmap[addr: addr + size] = 0
        self._rebuild()

    def _script(self) -> list:
        both = (bf_good_script(self.rand, self.cells), wf_good_script(self.rand, self.cells))
        first, second = self.rand.choice((0, 1)), self.rand.choice((0, 1))
        return both[first] + [(2, 0)] + both[second]  # (0 alloc | 1 free oldest | 2 free all, size)

    def _next(self) -> tuple[int, int]:
        """(1, size) for an allocation or (0, address) for a free."""
        while self.ptr < len(self.script):
            op, size = self.script[self.ptr]
            self.ptr += 1
            if op == 0:
                return 1, size
            if op == 1 and self.order:
                return 0, self.order[0]
            if op == 2:
                for addr in list(self.live):
                    self._free(addr)
        is_free = np.random.choice(np.array([0, 1]), p=[self.free_prob, 1 - self.free_prob]) == 0
        if is_free and self.live:
            return 0, int(np.random.choice(list(self.live)))
        return 1, int(np.random.choice(self.sizes, p=self.probs))

    def _pending(self) -> int:
        """Apply frees until an allocation is pending; its size. Each free is a step of the underlying env: it
        builds the observation and checks for the episode's end."""
        while True:
            op, x = self._next()
            if op == 1:
                return x
            self._free(x)
            self.request = 0
            self._obs()
            any(r["size"] >= 1 for r in self.free_list)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.bitmap.copy(), np.array([self.request], np.uint8)])[None, :]

    def reset(self, seed=None, options=None):
        self.bitmap = np.zeros(self.cells, np.uint8)
        self.live, self.order, self.free_list = {}, [], [{"idx": 0, "size": self.cells}]
        self.script, self.ptr, self.allocs = self._script(), 0, 0
        self.request = self._pending()
        return self._obs(), {}

    def step(self, action: int):
        rule = [self._Rule("best"), self._Rule("worst"), self._Rule("first")][action]
        if not self._alloc(rule.address(self.free_list, self.request), self.request):
            return self._obs(), -10.0, False, False, {}
        self.allocs += 1
        self.request = self._pending()
        done = self.allocs > self.horizon or not any(r["size"] >= self.request for r in self.free_list)
        return self._obs(), 0.0 if done else 0.1, done, False, {}


def make_peer(path: str, cells: int):
    """Lim & Maddukuri's ``StableBaselineEnvHistory`` from a checkout of curry2736/rl-malloc at ``path``."""
    if not os.path.isfile(os.path.join(path, "environments", "stable_baselines_env_history.py")):
        raise SystemExit(f"--peer {path}: no environments/stable_baselines_env_history.py there (a checkout of "
                         "curry2736/rl-malloc is expected)")
    sys.path.insert(0, os.path.abspath(path))
    from environments.stable_baselines_env_history import StableBaselineEnvHistory

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its stream class when built
        return StableBaselineEnvHistory(history_len=0, page_size=cells, allocator="mixed_ff_bad_wf_good")


class _SingleRun:
    """One env under timing: random actions (uniform, drawn up front); a single env (``batch`` None) is reset where
    an episode ends, a vector env (``batch`` heaps a step) resets itself. Steps are counted in heap-steps."""

    def __init__(self, env, n_actions: int = 3, warmup: int = 200, batch: int | None = None, tensors: bool = False):
        self.env, self.batch, self.i = env, batch, 0
        if batch is None:
            self.pool = np.random.default_rng(0).integers(0, n_actions, 4096).tolist()
        else:
            self.pool = action_pool(batch, n_actions)
            if tensors:  # a core, not a gymnasium env: torch actions in, tensors out
                self.pool = [torch.from_numpy(np.asarray(a)) for a in self.pool]
        self.steps, self.seconds, self.episodes = 0, 0.0, 0
        env.reset(seed=0)
        self.run(warmup, count=False)

    def run(self, n: int, count: bool = True) -> None:
        env, pool, i, episodes, single = self.env, self.pool, self.i, 0, self.batch is None
        t0 = time.perf_counter()
        for _ in range(n):
            _, _, term, trunc, _ = env.step(pool[i % len(pool)])
            i += 1
            if single:
                if term or trunc:
                    env.reset()
                    episodes += 1
            else:
                episodes += int(term.sum() + trunc.sum())
        if count:
            self.seconds += time.perf_counter() - t0
            self.steps += n * (self.batch or 1)
            self.episodes += episodes
        self.i = i

    def result(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds, "steps_per_s": self.steps / self.seconds,
                "us_per_step": 1e6 * self.seconds / self.steps, "episodes": self.episodes}


def time_interleaved(envs: list, seconds: float, slice_s: float = 0.1) -> list[dict]:
    """Round robin: each env steps for about ``slice_s`` in turn until each has ``seconds`` of timed steps, so a
    change in the machine's load falls on all of them alike."""
    runs = [_SingleRun(env) for env in envs]
    per_slice = []
    for r in runs:  # calibrate the steps per slice
        t0 = time.perf_counter()
        r.run(20, count=False)
        per_slice.append(max(1, int(slice_s * 20 / max(time.perf_counter() - t0, 1e-9))))
    while min(r.seconds for r in runs) < seconds:
        for r, n in zip(runs, per_slice, strict=True):
            if r.seconds < seconds:
                r.run(n)
    return [r.result() for r in runs]


def bench_single(cells: int, seconds: float, peer: str | None) -> int:
    import dreamalloc.alloc  # noqa: F401  (registers dreamalloc/Alloc-v0)

    np.random.seed(0)
    kw = {"cells": cells, "stream": "mixed", "action": "heuristic"}
    envs = [("gym.make dreamalloc/Alloc-v0 (fast path)", gym.make("dreamalloc/Alloc-v0", **kw)),
            ("gym.make dreamalloc/Alloc-v0, fast=False, jit=False (torch core, B=1)",
             gym.make("dreamalloc/Alloc-v0", fast=False, jit=False, **kw)),
            ("RefPageEnv (peer-free reference, this script)", RefPageEnv(cells))]
    if peer:
        envs.append(("Lim & Maddukuri StableBaselineEnvHistory (--peer)", make_peer(peer, cells)))
    print(f"single env: N={cells}, mixed stream, random heuristic actions (best/worst/first), reset on episode end; "
          f">= {seconds} s timed each, interleaved in slices of about 0.1 s")
    res = time_interleaved([env for _, env in envs], seconds)
    for (name, _), r in zip(envs, res, strict=True):
        print(f"  {name}: {r['steps']} steps in {r['seconds']:.2f} s = {r['steps_per_s']:,.0f} steps/s, "
              f"{r['us_per_step']:.1f} us/step, {r['episodes']} episodes", flush=True)
    fast, torch_core, ref = res[:3]
    print(f"load average (1, 5, 15 min) at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(f"single_env_us_per_step: {fast['us_per_step']:.1f}")
    print(f"single_env_speedup_vs_torch_core: {fast['steps_per_s'] / torch_core['steps_per_s']:.1f}")
    print(f"single_env_speedup_vs_reference: {fast['steps_per_s'] / ref['steps_per_s']:.2f}")
    if peer:
        print(f"reference_vs_peer: {ref['steps_per_s'] / res[3]['steps_per_s']:.2f}")
        print(f"single_env_speedup_vs_peer: {fast['steps_per_s'] / res[3]['steps_per_s']:.2f}")
    return 0


def bench_batched(batch: int, cells: int, seconds: float, peer: str | None, rounds: int = 4) -> int:
    """The batched core (B heaps, one thread) against the single-heap references, per core: heap-steps per
    second of ``AllocVectorEnv`` (the compiled step and, for comparison, the torch core) on the random and the
    mixed stream, and env steps per second of the peer-free ``RefPageEnv`` (and, with ``--peer``, Lim &
    Maddukuri's env), measured in ``rounds`` alternating rounds so that a change of load falls on all alike."""
    torch.set_num_threads(1)
    envs = [("AllocVectorEnv, compiled step, random stream", "vec",
             AllocVectorEnv(batch, cells=cells, stream="random", action="heuristic")),
            ("AllocVectorEnv, compiled step, mixed stream", "vec",
             AllocVectorEnv(batch, cells=cells, stream="mixed", action="heuristic")),
            ("AllocVectorEnv, torch core (jit=False), random stream", "vec",
             AllocVectorEnv(batch, cells=cells, stream="random", action="heuristic", jit=False)),
            ("AllocCore, compiled step, random stream (no gymnasium face)", "core",
             AllocCore(batch, cells=cells, stream="random", action="heuristic")),
            ("AllocCore, compiled step, mixed stream (no gymnasium face)", "core",
             AllocCore(batch, cells=cells, stream="mixed", action="heuristic")),
            ("RefPageEnv (peer-free reference, one heap)", "single", RefPageEnv(cells))]
    if peer:
        envs.append(("Lim & Maddukuri StableBaselineEnvHistory (--peer, one heap)", "single", make_peer(peer, cells)))
    print(f"batched core: B={batch} heaps, N={cells}, random heuristic actions, one thread (torch and the compiled "
          f"step), against single-heap envs; {rounds} alternating rounds, >= {seconds} s timed per env in all")
    runs = [_SingleRun(env) if kind == "single" else _SingleRun(env, batch=batch, warmup=20, tensors=kind == "core")
            for _, kind, env in envs]
    per_round = seconds / rounds
    for _ in range(rounds):
        for r in runs:
            t_end = r.seconds + per_round
            while r.seconds < t_end:
                r.run(500 if r.batch is None else 10)
    res = [r.result() for r in runs]
    for (name, _, _), r in zip(envs, res, strict=True):
        print(f"  {name}: {r['steps_per_s']:,.0f} heap-steps/s ({r['steps']:,} in {r['seconds']:.2f} s, "
              f"{r['us_per_step'] * 1e3:.0f} ns per heap-step, {r['episodes']} episodes)", flush=True)
    jit_random, jit_mixed, torch_random, core_random, core_mixed, ref = res[:6]
    print(f"load average (1, 5, 15 min) at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(f"batched_heap_steps_per_s: {jit_random['steps_per_s']:.0f}")
    print(f"batched_speedup_vs_torch_core: {jit_random['steps_per_s'] / torch_random['steps_per_s']:.1f}")
    print(f"batched_mixed_speedup_vs_reference: {jit_mixed['steps_per_s'] / ref['steps_per_s']:.1f}")
    print(f"batched_speedup_vs_reference: {jit_random['steps_per_s'] / ref['steps_per_s']:.1f}")
    print(f"batched_core_heap_steps_per_s: {core_random['steps_per_s']:.0f}")
    print(f"batched_core_speedup_vs_reference: {core_random['steps_per_s'] / ref['steps_per_s']:.1f}")
    print(f"batched_core_mixed_speedup_vs_reference: {core_mixed['steps_per_s'] / ref['steps_per_s']:.1f}")
    if peer:
        pr = res[6]["steps_per_s"]
        print(f"reference_vs_peer: {ref['steps_per_s'] / pr:.2f}")
        print(f"batched_mixed_speedup_vs_peer: {jit_mixed['steps_per_s'] / pr:.1f}")
        print(f"batched_core_speedup_vs_peer: {core_random['steps_per_s'] / pr:.1f}")
        print(f"batched_core_mixed_speedup_vs_peer: {core_mixed['steps_per_s'] / pr:.1f}")
        print(f"batched_speedup_vs_peer: {jit_random['steps_per_s'] / pr:.1f}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1024, help="heaps per vector step B (default 1024)")
    p.add_argument("--cells", default="64,256,1024,4096", help="comma-separated heap sizes N")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timed wall seconds per measurement")
    p.add_argument("--device", default="cpu", help="device of the native env: cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads for both envs (default 0: leave torch's default)")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 64, cells 64, 0.3 s")
    p.add_argument("--no-sync", action="store_true", help="measure the native env only")
    p.add_argument("--profile", type=int, default=None, metavar="N",
                   help="instead of the table, cProfile native steps at heap size N (top 15 by tottime)")
    p.add_argument("--profile-steps", type=int, default=50)
    p.add_argument("--env", choices=("alloc", "load_balance"), default="alloc",
                   help="alloc (default; N = heap cells) or load_balance (Park's defaults; N = jobs per episode, "
                        "default 1000)")
    p.add_argument("--streams", default=None, metavar="S1,S2,...",
                   help="instead of the SyncVectorEnv table: the native env on each request stream (a stream "
                        "name or trace:NAME), with ratios to the first; ends with min_ratio_to_reference")
    p.add_argument("--vs-torch", action="store_true",
                   help="with --streams: time each stream on the torch core (jit=False) too, and print the speedup")
    p.add_argument("--single", action="store_true",
                   help="instead of the table: the single env (B = 1, gym.make) against the torch core at B = 1, "
                        "the peer-free reference RefPageEnv and, with --peer, Lim & Maddukuri's env")
    p.add_argument("--batched", action="store_true",
                   help="instead of the table: the batched core (--batch heaps, one thread) against the single-heap "
                        "references per core (RefPageEnv and, with --peer, Lim & Maddukuri's env)")
    p.add_argument("--peer", default=None, metavar="PATH",
                   help="with --single or --batched: a checkout of curry2736/rl-malloc to time its "
                        "StableBaselineEnvHistory")
    args = p.parse_args(argv)
    if args.peer and not (args.single or args.batched):
        p.error("--peer goes with --single or --batched")
    ENV["kind"] = args.env
    if args.env == "load_balance" and args.cells == p.get_default("cells"):
        args.cells = "1000"

    if args.quick:
        args.batch, args.cells, args.seconds = 64, "64", 0.3
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cells = [int(c) for c in args.cells.split(",") if c.strip()]
    if not cells:
        p.error("--cells names no heap size")
    B = args.batch

    print(f"python {platform.python_version()}, torch {torch.__version__}, gymnasium {gym.__version__}, "
          f"numpy {np.__version__}")
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
          f"cpu cores: {os.cpu_count()}, native device: {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + ", SyncVectorEnv device: cpu")
    print(f"load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other processes on this machine skew the timings)")
    if args.env == "load_balance":
        print(f"env: load_balance (Park's defaults, N = jobs per episode), random servers; B={B} envs per "
              f"vector step; >= {args.seconds} s timed per measurement; steps/s = env steps (vector steps x B)")
    else:
        print(f"env: stream={ENV_KW['stream']}, action={ENV_KW['action']}, random actions; B={B} heaps per "
              f"vector step; >= {args.seconds} s timed per measurement; steps/s = heap-steps (vector steps x B)")

    if args.single:
        n = cells[0] if len(cells) == 1 else HEADLINE_N
        return bench_single(n, args.seconds, args.peer)
    if args.batched:
        n = cells[0] if len(cells) == 1 else HEADLINE_N
        return bench_batched(B, n, args.seconds, args.peer)
    if args.profile is not None:
        print(profile_native(B, args.profile, args.profile_steps, args.device))
        return 0
    if args.streams:
        specs = [x.strip() for x in args.streams.split(",") if x.strip()]
        if len(specs) < 2:
            p.error("--streams needs a reference stream and at least one more, e.g. random,trace:python_json")
        worst = bench_streams(specs, B, cells, args.seconds, args.device, args.vs_torch)
        print(f"min_ratio_to_reference: {worst:.2f}")
        return 0

    rows = []
    for n in cells:
        nat = bench_native(B, n, args.seconds, args.device)
        print(f"  N={n}: native {nat['vector_steps']} vector steps in {nat['seconds']:.2f} s "
              f"({nat['us_per_vector_step'] / 1e3:.2f} ms/vector step, {nat['episodes']} episodes ended)",
              flush=True)
        syn = None
        if not args.no_sync:
            syn = bench_sync(B, n, args.seconds)
            print(f"  N={n}: SyncVectorEnv {syn['vector_steps']} vector steps in {syn['seconds']:.2f} s "
                  f"({syn['us_per_vector_step'] / 1e3:.1f} ms/vector step = "
                  f"{syn['us_per_vector_step'] / B:.0f} us/heap-step; built in {syn['build_seconds']:.1f} s)",
                  flush=True)
        rows.append((n, nat, syn))

    print()
    print("| N | native steps/s | SyncVectorEnv steps/s | speedup |")
    print("|---:|---:|---:|---:|")
    for n, nat, syn in rows:
        s = f"{syn['heap_steps_per_s']:,.0f}" if syn else "-"
        x = f"{nat['heap_steps_per_s'] / syn['heap_steps_per_s']:.1f}x" if syn else "-"
        print(f"| {n} | {nat['heap_steps_per_s']:,.0f} | {s} | {x} |")
    print(f"load average (1, 5, 15 min) at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    if args.no_sync:
        return 0
    pick = next((r for r in rows if r[0] == HEADLINE_N), None)
    if pick is None:
        pick = rows[0]
        print(f"N={HEADLINE_N} was not measured; the speedup below is at N={pick[0]}")
    n, nat, syn = pick
    print(f"speedup_vs_sync_vector_env: {nat['heap_steps_per_s'] / syn['heap_steps_per_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
