"""dreamalloc's PPO / A2C / DQN against Stable-Baselines3's, side by side in one process.

(a) CartPole-v1, rl-baselines3-zoo hyperparameters and budgets, the same for both libraries: final return
    over 100 deterministic evaluation episodes (the same seeds and the same evaluation loop for both).
(b) The allocation env (page 256, Lim's mixed stream, heuristic actions), ``--envs`` heaps in parallel, the
    hyperparameters of conf/agent/NAME.yaml given to both: training env steps per second (env stepping and
    learning together, same env-step budget) and the final deterministic return. dreamalloc trains on
    ``AllocCore``'s tensors. SB3 cannot take a gymnasium VectorEnv, so it runs two ways:
    ``dummy``, SB3 as it comes: ``make_vec_env("dreamalloc/Alloc-v0", n_envs)``, a DummyVecEnv stepping
    single-heap envs one after another; ``native``, ``AllocVectorEnv`` (the batched env) behind a minimal
    SB3 ``VecEnv`` adapter (dreamalloc/core/sb3.py), so only the agent-side code differs.

    python scripts/bench_baselines.py [--steps 30000] [--algos ppo,a2c,dqn] [--envs 16] [--quick]

Ends with ``min_speedup_vs_sb3: X``: the smallest ratio, over the algorithms, of our env steps/s to SB3's
(SB3 as it comes, the ``dummy`` route); ``min_speedup_vs_sb3_native_env`` gives the same against the adapter,
and ``min_speedup_bound_vs_sb3_native_env`` its ceiling: SB3's time over the env's own (random actions, no
agent), the ratio a learner that cost nothing would reach (the "bound" columns).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dreamalloc.agents import agent_classes, make_agent  # noqa: E402
from dreamalloc.alloc.env import AllocConfig, AllocCore  # noqa: E402
from dreamalloc.alloc.vector import make_alloc_vecenv  # noqa: E402
from dreamalloc.core.driver import drive, evaluate  # noqa: E402
from dreamalloc.core.gym_vec import GymVecCore  # noqa: E402

ALGOS = ("ppo", "a2c", "dqn")

# rl-baselines3-zoo's CartPole-v1 entries (hyperparams/{ppo,a2c,dqn}.yml): env count, budget, hyperparameters
# in dreamalloc's names.
CARTPOLE = {
    "ppo": (8, 100_000, dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
                             lr=1e-3, anneal_lr=True, clip=0.2, anneal_clip=True)),
    "a2c": (8, 500_000, dict(ent_coef=0.0)),
    "dqn": (1, 50_000, dict(lr=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                            target_update_interval=10, train_freq=256, gradient_steps=128,
                            exploration_fraction=0.16, exploration_final_eps=0.04, hidden=[256, 256])),
}

# DQN hyperparameters that carry the same name in dreamalloc's DQN and SB3's (plus lr -> learning_rate).
DQN_SHARED = ("buffer_size", "learning_starts", "batch_size", "tau", "gamma", "train_freq", "gradient_steps",
              "target_update_interval", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps",
              "max_grad_norm")


class Clock:
    """Wall-clock and process CPU seconds of a block. Throughput is computed from CPU time: every run here
    is single-threaded, so on an idle machine the two agree, and on a shared one CPU time leaves out the
    time spent waiting for a core (see docs/bench_baselines.md)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


# --- dreamalloc's side -------------------------------------------------------------------------------------
def agent_hparams(algo: str, total_steps: int, extra: dict | None = None) -> dict:
    """conf/agent/ALGO.yaml's values (the schema's defaults where the file is absent), plus ``extra``."""
    cls = dqn_class() if algo == "dqn" else agent_classes()[algo]
    names = {f.name for f in fields(cls.Config)}
    hp = {f.name: getattr(cls.Config(), f.name) for f in fields(cls.Config)}
    path = ROOT / "conf" / "agent" / f"{algo}.yaml"
    if path.exists():
        y = OmegaConf.load(path)
        y = OmegaConf.merge(y, {"steps": total_steps})
        loaded = OmegaConf.to_container(y, resolve=True)
        hp.update({k: v for k, v in loaded.items() if k in names})
    if "total_steps" in names:
        hp["total_steps"] = total_steps
    unknown = sorted(set(extra or {}) - names)
    if unknown:
        raise SystemExit(f"bench_baselines: {algo} has no hyperparameter(s) {unknown}")
    hp.update(extra or {})
    hp.pop("name", None)
    return hp


def dqn_class():
    cls = agent_classes().get("dqn")
    if cls is None:
        raise SystemExit("bench_baselines: --algos includes dqn but dreamalloc has no 'dqn' agent yet "
                         "(dreamalloc/agents/dqn.py, class DQNAgent); run with --algos ppo,a2c")
    return cls


def train_ours(algo, core, hp, steps, seed):
    torch.manual_seed(seed)
    agent = make_agent(algo, core.obs_dim if hasattr(core, "obs_dim") else core.cfg.obs_dim,
                       core.n_actions if hasattr(core, "n_actions") else core.cfg.n_actions,
                       getattr(core, "cfg", None), core.device, **hp)
    with Clock() as clock:
        drive(agent, core, steps, seed=seed)
    return agent, clock


# --- Stable-Baselines3's side -------------------------------------------------------------------------------
def sb3():
    import stable_baselines3 as sb

    return sb


def sb3_kwargs(algo: str, hp: dict) -> dict:
    """Our hyperparameters in SB3's names (linear schedules where we anneal)."""
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "silu": torch.nn.SiLU, "elu": torch.nn.ELU}
    if algo == "dqn":
        if hp.get("double_q"):
            raise SystemExit("bench_baselines: SB3's DQN has no double Q-learning; compare with double_q false")
        kw = {k: hp[k] for k in DQN_SHARED}
        kw["learning_rate"] = hp["lr"]
        kw["policy_kwargs"] = dict(net_arch=list(hp["hidden"]), activation_fn=act[hp["activation"]])
        return kw
    if hp["shared"]:
        raise SystemExit("bench_baselines: SB3 (>= 1.8) has no shared actor-critic torso; compare with shared false")
    lr, clip = hp["lr"], hp.get("clip")
    pk = dict(net_arch=dict(pi=list(hp["hidden"]), vf=list(hp["hidden"])), activation_fn=act[hp["activation"]])
    kw = dict(n_steps=hp["n_steps"], gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], ent_coef=hp["ent_coef"],
              vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"], normalize_advantage=hp["normalize_advantage"],
              learning_rate=(lambda p: p * lr) if hp["anneal_lr"] else lr)
    if algo == "ppo":
        kw.update(batch_size=hp["batch_size"], n_epochs=hp["n_epochs"], clip_range_vf=hp["clip_vf"],
                  target_kl=hp["target_kl"], clip_range=(lambda p: p * clip) if hp["anneal_clip"] else clip)
        pk["optimizer_kwargs"] = dict(eps=hp["opt_eps"])
    else:
        kw.update(use_rms_prop=hp["optimizer"] == "rmsprop", rms_prop_eps=hp["opt_eps"])
        if hp["optimizer"] == "adam":
            pk["optimizer_kwargs"] = dict(eps=hp["opt_eps"])
    kw["policy_kwargs"] = pk
    return kw


def train_sb3(algo, venv, hp, steps, seed):
    sb = sb3()
    cls = {"ppo": sb.PPO, "a2c": sb.A2C, "dqn": sb.DQN}[algo]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **sb3_kwargs(algo, hp))
        with Clock() as clock:
            model.learn(steps)
    return model, clock


class SB3Policy:
    """An SB3 model behind the Agent.act face, so both libraries go through the same evaluation loop."""

    def __init__(self, model):
        self.model = model

    def initial_state(self, batch):
        return None

    def act(self, obs, state, info, deterministic=True):
        a, _ = self.model.predict(obs.cpu().numpy(), deterministic=deterministic)
        return torch.as_tensor(np.asarray(a), dtype=torch.long), state


# --- the two parts ------------------------------------------------------------------------------------------
def cartpole(algos, scale, seed, episodes):
    from stable_baselines3.common.env_util import make_vec_env

    rows = []
    for algo in algos:
        n_envs, budget, extra = CARTPOLE[algo]
        budget = max(int(budget * scale), 1000)
        hp = agent_hparams(algo, budget, extra)
        agent, c_ours = train_ours(algo, GymVecCore("CartPole-v1", n_envs), hp, budget, seed)
        r_ours = evaluate(agent, GymVecCore("CartPole-v1", 8), episodes).mean()
        model, c_sb3 = train_sb3(algo, make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed), hp, budget, seed)
        r_sb3 = evaluate(SB3Policy(model), GymVecCore("CartPole-v1", 8), episodes).mean()
        rows.append(dict(algo=algo, steps=budget, envs=n_envs, r_ours=r_ours, r_sb3=r_sb3, sps_ours=budget / c_ours.cpu,
                         sps_sb3=budget / c_sb3.cpu, t_ours=c_ours.wall, t_sb3=c_sb3.wall))
        print(f"  cartpole {algo}: ours {r_ours:.1f} in {c_ours.wall:.1f}s, sb3 {r_sb3:.1f} in {c_sb3.wall:.1f}s",
              flush=True)
    return rows


def alloc(algos, steps, n_envs, seed, episodes, cells, stream, routes):
    from stable_baselines3.common.env_util import make_vec_env

    import dreamalloc.alloc  # noqa: F401  (registers dreamalloc/Alloc-v0)

    cfg = AllocConfig(cells=cells, stream=stream, action="heuristic").validate()
    kwargs = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    make = {"native": lambda: make_alloc_vecenv(n_envs, cfg),
            # make_vec_env asks for render_mode "rgb_array" unless told otherwise; AllocEnv renders "ansi" only
            "dummy": lambda: make_vec_env("dreamalloc/Alloc-v0", n_envs=n_envs, seed=seed,
                                          env_kwargs={**kwargs, "render_mode": None})}
    # Warm the env's compiled step (and numba's cache) before any clock starts: otherwise whichever library
    # trains first pays for it, and both drive the same compiled code.
    warm = AllocCore(n_envs, cfg)
    warm.reset(seed)
    warm.step(torch.zeros(n_envs, dtype=torch.long))
    # The env alone (uniform random actions, no agent): what any learner on this env pays at least, so
    # (SB3's time) / (this time) bounds the speedup an agent that cost nothing could reach against SB3.
    acts = torch.randint(0, cfg.n_actions, (64, n_envs),
                         generator=torch.Generator().manual_seed(seed))
    with Clock() as c:
        for i in range(-(-steps // n_envs)):
            warm.step(acts[i % 64])
    env_sps = steps / c.cpu
    print(f"  alloc env alone: {env_sps:,.0f} steps/s", flush=True)
    rows = []
    for algo in algos:
        hp = agent_hparams(algo, steps)
        # A short throwaway run of each side first (two updates' worth of steps): one-off costs (numba loading
        # our compiled kernels from its cache, torch's first calls) are not per-step throughput.
        warm = min(steps, max(4096, 2 * int(hp.get("n_steps", 1)) * n_envs))
        train_ours(algo, AllocCore(n_envs, cfg), hp, warm, seed)
        for route in routes:
            train_sb3(algo, make[route](), hp, warm, seed)
        agent, c = train_ours(algo, AllocCore(n_envs, cfg), hp, steps, seed)
        row = dict(algo=algo, steps=steps, envs=n_envs, sps_ours=steps / c.cpu, t_ours=c.wall, sps_env=env_sps,
                   r_ours=evaluate(agent, AllocCore(16, cfg), episodes).mean())
        print(f"  alloc {algo}: ours {row['sps_ours']:,.0f} steps/s", end="", flush=True)
        for route in routes:
            model, c = train_sb3(algo, make[route](), hp, steps, seed)
            row[f"sps_{route}"], row[f"t_{route}"] = steps / c.cpu, c.wall
            row[f"r_{route}"] = evaluate(SB3Policy(model), AllocCore(16, cfg), episodes).mean()
            print(f", sb3 {route} {row[f'sps_{route}']:,.0f} steps/s", end="", flush=True)
        print(flush=True)
        rows.append(row)
    return rows


def alloc_table(rows, routes, title):
    """One row per algorithm; SB3 columns per route (dummy: Alloc-v0 x envs in a DummyVecEnv, native:
    AllocVectorEnv through the adapter)."""
    head = ["algo", "envs", "env steps", "return ours", *[f"return SB3 {r}" for r in routes], "steps/s ours",
            *[f"steps/s SB3 {r}" for r in routes], *[f"speedup vs {r}" for r in routes],
            *[f"bound vs {r}" for r in routes], "wall s ours / " + " / ".join(f"SB3 {r}" for r in routes)]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["algo"], str(r["envs"]), f"{r['steps']:,}", f"{r['r_ours']:.2f}",
                 *[f"{r[f'r_{x}']:.2f}" for x in routes], f"{r['sps_ours']:,.0f}",
                 *[f"{r[f'sps_{x}']:,.0f}" for x in routes], *[f"{r['sps_ours'] / r[f'sps_{x}']:.2f}x" for x in routes],
                 *[f"{r['sps_env'] / r[f'sps_{x}']:.2f}x" for x in routes],
                 " / ".join(f"{r[f't_{x}']:.0f}" for x in ("ours", *routes))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows, title):
    lines = [f"### {title}", "",
             "| algo | envs | env steps | return ours | return SB3 | steps/s ours | steps/s SB3 | speedup "
             "| wall s ours / SB3 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['algo']} | {r['envs']} | {r['steps']:,} | {r['r_ours']:.2f} | {r['r_sb3']:.2f} | "
                     f"{r['sps_ours']:,.0f} | {r['sps_sb3']:,.0f} | {r['sps_ours'] / r['sps_sb3']:.2f}x | "
                     f"{r['t_ours']:.0f} / {r['t_sb3']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30_000, help="env steps per run on the allocation env")
    p.add_argument("--algos", default="ppo,a2c,dqn", help="comma-separated subset of ppo,a2c,dqn")
    p.add_argument("--envs", type=int, default=16, help="parallel heaps on the allocation env")
    p.add_argument("--cells", type=int, default=256)
    p.add_argument("--stream", default="mixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=100, help="deterministic evaluation episodes")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both libraries)")
    p.add_argument("--cartpole-scale", type=float, default=1.0, help="fraction of the zoo's CartPole budgets")
    p.add_argument("--skip-cartpole", action="store_true")
    p.add_argument("--sb3-env", default="dummy,native", help="SB3's allocation env routes: dummy, native or both")
    p.add_argument("--quick", action="store_true", help="small budgets: a smoke test, not a measurement")
    args = p.parse_args(argv)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGOS]
    if bad or not algos:
        p.error(f"--algos: unknown {bad}; choose among {', '.join(ALGOS)}")
    routes = [r.strip() for r in args.sb3_env.split(",") if r.strip()]
    if not routes or any(r not in ("dummy", "native") for r in routes):
        p.error(f"--sb3-env: choose among dummy,native, got {args.sb3_env!r}")
    if "dqn" in algos:
        dqn_class()
    if args.quick:
        args.steps, args.episodes, args.cartpole_scale = min(args.steps, 4096), min(args.episodes, 10), 0.02
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), python {platform.python_version()}, "
          f"stable-baselines3 {sb3().__version__}; steps/s are env steps per CPU-second of training "
          f"(env stepping + learning), wall seconds alongside", flush=True)
    out = []
    if not args.skip_cartpole:
        out.append(table(cartpole(algos, args.cartpole_scale, args.seed, args.episodes),
                         "CartPole-v1 (rl-baselines3-zoo hyperparameters and budgets)"))
    arows = alloc(algos, args.steps, args.envs, args.seed, args.episodes, args.cells, args.stream, routes)
    out.append(alloc_table(arows, routes, f"Allocation env (cells {args.cells}, stream {args.stream}, heuristic "
                                          "actions, conf/agent hyperparameters)"))
    print("\n" + "\n\n".join(out) + "\n")
    speedups = {r: min(row["sps_ours"] / row[f"sps_{r}"] for row in arows) for r in routes}
    if "native" in speedups:
        print(f"min_speedup_vs_sb3_native_env: {speedups['native']:.2f}")
        # the ceiling of that ratio: an agent costing nothing against SB3's time on the same env (env alone)
        print(f"min_speedup_bound_vs_sb3_native_env: "
              f"{min(row['sps_env'] / row['sps_native'] for row in arows):.2f}")
    print(f"min_speedup_vs_sb3: {speedups.get('dummy', speedups.get('native')):.2f}")
    return speedups


if __name__ == "__main__":
    main()
