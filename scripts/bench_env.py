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

The last line is ``speedup_vs_sync_vector_env: X`` (the speedup at N=256, or at the first N measured).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym  # noqa: E402
from gymnasium.vector import AutoresetMode, SyncVectorEnv  # noqa: E402

from dreamalloc.alloc import AllocEnv, AllocVectorEnv  # noqa: E402
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
    """``random`` / ``mixed`` / ... (a stream name) or ``trace:NAME`` (a shipped trace or a trace file)."""
    if spec.startswith("trace:"):
        return {"stream": "trace", "stream_params": {"path": spec.split(":", 1)[1]}, "action": "heuristic"}
    return {"stream": spec, "action": "heuristic"}


def bench_streams(specs: list[str], batch: int, cells: list[int], seconds: float, device: str) -> float:
    """Native env steps/s per request stream, and each stream's ratio to the first (the reference, measured in
    the same run). Returns the smallest ratio."""
    rows = []
    for n in cells:
        for spec in specs:
            env = AllocVectorEnv(num_envs=batch, cells=n, device=device, **stream_kwargs(spec))
            try:
                r = time_steps(env, batch, seconds, warmup=20, min_steps=10, device=device)
            finally:
                env.close()
            print(f"  N={n} {spec}: {r['vector_steps']} vector steps in {r['seconds']:.2f} s, "
                  f"{r['episodes']} episodes ended", flush=True)
            rows.append((n, spec, r["heap_steps_per_s"]))
    print()
    print(f"| N | stream | native steps/s | ratio to {specs[0]} |")
    print("|---:|---|---:|---:|")
    worst = float("inf")
    for n, spec, sps in rows:
        ref = next(x for m, sp, x in rows if m == n and sp == specs[0])
        worst = min(worst, sps / ref) if spec != specs[0] else worst
        print(f"| {n} | {spec} | {sps:,.0f} | {sps / ref:.2f}x |")
    print(f"load average (1, 5, 15 min) at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
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
    args = p.parse_args(argv)
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

    if args.profile is not None:
        print(profile_native(B, args.profile, args.profile_steps, args.device))
        return 0
    if args.streams:
        specs = [x.strip() for x in args.streams.split(",") if x.strip()]
        if len(specs) < 2:
            p.error("--streams needs a reference stream and at least one more, e.g. random,trace:python_json")
        print(f"min_ratio_to_reference: {bench_streams(specs, B, cells, args.seconds, args.device):.2f}")
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
