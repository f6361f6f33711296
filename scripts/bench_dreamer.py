"""Gradient updates per second of our DreamerV3 and of sheeprl's (0.8.4, ``dreamer_v3_5``: its Nature-version
DreamerV3) at the same model size, batch 16 x 64, on CartPole-v1's vector observations (4 floats, 2 actions).

sheeprl is installed on first use into its own venv (default ~/.cache/dreamalloc/sheeprl-0.8.4), which reuses
this project's torch through a .pth file (so pip never downloads another torch); nothing of it is imported
here: its side runs in a subprocess. Both sides train on random sequences from the same shapes, one thread,
after a few warm-up updates. The two sides alternate for ``--rounds`` rounds (a shared machine drifts); the
result is the median over rounds of ours / sheeprl's updates per second: ``speedup_vs_sheeprl: X``.

The distance to this machine's limit: the floating-point operations of one of our updates (counted by
``torch.utils.flop_counter.FlopCounterMode``: matrix products and their gradients, forward and backward), the
FLOP/s our updates achieve, and the FLOP/s of a dense float32 matrix product at the same thread count and at the
update's typical shape (the B x T rows through a ``units``-wide layer), measured in the same run:
``flop_fraction_of_matmul: X`` is achieved / dense (1.0 would be an update as fast as pure matrix products).

    OMP_NUM_THREADS=1 python scripts/bench_dreamer.py --size 1m --updates 6 --warmup 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

SIZES = {"1m": (512, 64, 4, 64), "12m": (2048, 256, 16, 256), "25m": (3072, 384, 24, 384),
         "50m": (4096, 512, 32, 512)}  # deter, hidden, classes, units (conf/agent/dreamer_SIZE.yaml)
SHEEPRL_SIZES = {"1m": "1M", "12m": "12M", "25m": "25M", "50m": "50M"}
OBS_DIM, N_ACTIONS, B, T = 4, 2, 16, 64

SHEEPRL_HARNESS = textwrap.dedent('''
    import json, sys, time
    import numpy as np, torch, gymnasium as gym, hydra
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.utils.utils import dotdict
    from sheeprl.algos.dreamer_v3_5.agent import build_agent
    from sheeprl.algos.dreamer_v3_5.dreamer_v3_5 import train
    from sheeprl.algos.dreamer_v3.utils import Moments

    size, updates, warmup, threads, B, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \\
        int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with initialize_config_module("sheeprl.configs", version_base="1.3"):
        cfg = compose("config", overrides=["exp=dreamer_v3_5", f"algo=dreamer_v3_5_{size}", "env=gym",
                                           "env.id=CartPole-v1", "algo.cnn_keys.encoder=[]",
                                           "algo.mlp_keys.encoder=[state]", "fabric.accelerator=cpu",
                                           "metric.log_level=0", f"algo.per_rank_batch_size={B}",
                                           f"algo.per_rank_sequence_length={T}"])
    cfg = dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    from lightning.fabric import Fabric
    fabric = Fabric(devices=1, accelerator="cpu", precision="32-true")
    obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    wm, actor, critic, target, player = build_agent(fabric, (2,), False, cfg, obs_space)
    opt = hydra.utils.instantiate(cfg.algo.optimizer, params=[*wm.parameters(), *actor.parameters(),
                                  *critic.parameters()], _convert_="all")
    opt = fabric.setup_optimizers(opt)
    m = cfg.algo.actor.moments
    moments = Moments(m.decay, m.max, m.percentile.low, m.percentile.high)
    ctx = int(cfg.algo.replay_context)
    L = T + ctx
    wmc = cfg.algo.world_model
    deter = wmc.recurrent_model.recurrent_state_size
    def batch():
        actions = torch.nn.functional.one_hot(torch.randint(0, 2, (L, B)), 2).float()
        return {"state": torch.randn(L, B, 4), "actions": actions,
                "rewards": torch.randn(L, B, 1), "terminated": (torch.rand(L, B, 1) < 0.02).float(),
                "truncated": torch.zeros(L, B, 1), "is_first": (torch.rand(L, B, 1) < 0.02).float(),
                "deter": torch.zeros(L, B, deter, dtype=torch.float16),
                "stoch": torch.zeros(L, B, wmc.stochastic_size, dtype=torch.uint8)}
    params = sum(p.numel() for mod in (wm, actor, critic) for p in mod.parameters())
    for _ in range(warmup):
        train(fabric, cfg, wm, actor, critic, target, opt, moments, batch(), None, (2,))
    data = [batch() for _ in range(updates)]
    t0 = time.perf_counter()
    for d in data:
        train(fabric, cfg, wm, actor, critic, target, opt, moments, d, None, (2,))
    dt = time.perf_counter() - t0
    print(json.dumps({"updates_per_s": updates / dt, "params": params}))
''')


def ensure_sheeprl(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import sheeprl"], capture_output=True).returncode == 0:
        return py
    print(f"installing sheeprl 0.8.4 into {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_dreamalloc_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # reuse our torch
    subprocess.run([str(py), "-m", "pip", "install", "-q", "sheeprl==0.8.4"], check=True)
    return py


def bench_ours(size: str, updates: int, warmup: int, threads: int, phases: bool = False, **hp) -> dict:
    """Our updates per second (``hp``: agent overrides, e.g. imag_last=16, compile=True); with ``phases`` also the
    milliseconds an update spends in each phase (``phase_ms``), timed over the same updates."""
    import torch

    from dreamalloc.agents import make_agent

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    deter, hidden, classes, units = SIZES[size]
    agent = make_agent("dreamer", OBS_DIM, N_ACTIONS, None, "cpu", deter=deter, hidden=hidden, classes=classes,
                       units=units, batch_size=B, batch_length=T, learning_starts=10**12, replay_size=B * 200, **hp)
    obs = torch.randn(B, OBS_DIM)
    state = agent.initial_state(B)
    for _ in range(T + 8):  # fill the replay with random transitions
        action, state = agent.act(obs, state, {})
        nobs = torch.randn(B, OBS_DIM)
        term = torch.rand(B) < 0.02
        agent.observe(obs, action, torch.randn(B), term, torch.zeros(B, dtype=torch.bool), nobs, {})
        obs = nobs
    for _ in range(warmup):
        agent.train_step()
    spent = phase_timers(agent) if phases else None
    t0 = time.perf_counter()
    for _ in range(updates):
        agent.train_step()
    dt = time.perf_counter() - t0
    out = {"updates_per_s": updates / dt, "params": sum(p.numel() for p in agent.params)}
    if spent is not None:
        spent.pop("restore")()
        out["phase_ms"] = {k: round(1000 * v / updates, 1) for k, v in spent.items()}
        out["phase_ms"]["update"] = round(1000 * dt / updates, 1)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        agent.train_step()
    out["flop_per_update"] = int(counter.get_total_flops())
    return out


def phase_timers(agent) -> dict:
    """Wall-clock seconds per phase of ``agent.train_step``, accumulated from now on by wrapping the methods it calls
    (on the instances; ``backward`` on torch.Tensor): the world model's loss (the posterior loop inside it counted
    apart too), imagination, the reward, continue and critic heads on the imagined states (one pass, norm_mlps), the
    actor-critic losses, backward, AGC and the optimiser step. The returned dict's ``restore`` entry undoes the
    wrapping."""
    import torch

    import dreamalloc.agents.dreamer.agent as agent_module

    spent: dict = {}
    undo = []

    def wrap(owner, name, label):
        f = getattr(owner, name)
        spent[label] = 0.0

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t

        own = name in vars(owner)  # a class's or module's own attribute; else an instance's method, found on its type
        setattr(owner, name, timed)
        undo.append(lambda: setattr(owner, name, f) if own else delattr(owner, name))

    wm = agent.wm
    wrap(wm, "loss", "world_model_loss")
    wrap(wm.rssm, "observe", "posterior_loop")
    wrap(wm.rssm, "imagine", "imagination")
    wrap(agent_module, "norm_mlps", "imagined_heads")
    wrap(agent.ac, "loss", "actor_critic_loss")
    wrap(torch.Tensor, "backward", "backward")
    wrap(agent_module, "adaptive_clip_", "agc")
    wrap(agent.opt, "step", "optimizer")

    def restore():
        for u in reversed(undo):
            u()

    spent["restore"] = restore
    return spent


def dense_matmul_flops(size: str, threads: int, seconds: float = 1.0) -> float:
    """FLOP/s of a float32 (B*T, units) x (units, units) product, this thread count, best of a few timings."""
    import torch

    torch.set_num_threads(threads)
    units = SIZES[size][3]
    a, w = torch.randn(B * T, units), torch.randn(units, units)
    for _ in range(3):
        a @ w
    best, n = 0.0, 8
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(n):
            a @ w
        best = max(best, 2 * B * T * units * units * n / (time.perf_counter() - t0))
    return best


def bench_sheeprl(py: Path, size: str, updates: int, warmup: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([str(py), "-c", SHEEPRL_HARNESS, SHEEPRL_SIZES[size], str(updates), str(warmup),
                          str(threads), str(B), str(T)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"sheeprl benchmark failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1m")
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurements of both sides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "dreamalloc" / "sheeprl-0.8.4")
    ap.add_argument("--skip-sheeprl", action="store_true", help="measure ours only")
    ap.add_argument("--phases", action="store_true", help="also print where our update's time goes (phase_ms)")
    ap.add_argument("--imag-last", type=int, default=0,
                    help="ours only (implies --skip-sheeprl): imagine from the last K steps of each sequence, as "
                         "agent=dreamer_cpu does with 16 (0: from all of them, as sheeprl)")
    ap.add_argument("--compile", action="store_true", help="ours only (implies --skip-sheeprl): agent.compile=true")
    a = ap.parse_args()
    hp = {"imag_last": a.imag_last, "compile": a.compile}
    py = None if a.skip_sheeprl or a.imag_last or a.compile else ensure_sheeprl(a.venv)
    ratios, fractions = [], []
    for r in range(a.rounds):
        ours = bench_ours(a.size, a.updates, a.warmup, a.threads, a.phases, **hp)
        achieved = ours["flop_per_update"] * ours["updates_per_s"]
        dense = dense_matmul_flops(a.size, a.threads)
        fractions.append(achieved / dense)
        line = (f"round {r + 1}: ours {ours['updates_per_s']:.3f} updates/s ({ours['params']:,} parameters, "
                f"{ours['flop_per_update'] / 1e9:.2f} GFLOP per update: {achieved / 1e9:.2f} GFLOP/s achieved; dense "
                f"matmul {dense / 1e9:.2f} GFLOP/s; fraction {fractions[-1]:.3f})")
        if py is not None:
            theirs = bench_sheeprl(py, a.size, a.updates, a.warmup, a.threads)
            ratios.append(ours["updates_per_s"] / theirs["updates_per_s"])
            line += (f", sheeprl dreamer_v3_5 {theirs['updates_per_s']:.3f} updates/s "
                     f"({theirs['params']:,} parameters), ratio {ratios[-1]:.2f}")
        print(line, flush=True)
        if "phase_ms" in ours:
            print(f"phase_ms: {json.dumps(ours['phase_ms'])}", flush=True)
    print(f"flop_fraction_of_matmul: {statistics.median(fractions):.3f}")
    if ratios:
        print(f"speedup_vs_sheeprl: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
