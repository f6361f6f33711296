"""Every dispatch rule on the evaluation streams of a load-balance experiment, with 95 % t-intervals.

The same trials as the harness's evaluation (trial t on stream seed eval.seed + t, K episodes per trial), so
the rows line up with the learners' results; one batched run per rule and task instead of one evaluate.py
per rule. Also the Park check of docs/reference.md section 3 (mean job time on Park's defaults, against the
figures measured on Park's own code):

    python scripts/lb_heuristics.py --experiment redovian2025_standard
    python scripts/lb_heuristics.py --experiment redovian2025_adaptive env.size_max=10000 env.load_obs=work
    python scripts/lb_heuristics.py --park 1000 --seed 0      # park-project/park as it is, seeds 0..999
    python scripts/lb_heuristics.py --park 1000 --size-max 10000 --load-obs work   # the fork's options

The dispatch rules read the true outstanding work, so their rows depend on the job law (``--size-max``) only;
``--load-obs`` changes the observation, which the extra row "greedy on the observation" (argmin (observed load
+ size) / rate, what an agent reading Park's observation would do) reads. Hydra overrides after
``--experiment NAME`` (``env.size_max=10000 env.load_obs=work``) select the env variant there.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dreamalloc.core.rollout import run_episodes  # noqa: E402
from dreamalloc.loadbalance import FORK_SIZE_MAX, LOAD_OBS, LoadBalanceConfig, LoadBalanceCore  # noqa: E402
from dreamalloc.loadbalance.references import dispatch_returns, no_wait_bound  # noqa: E402
from dreamalloc.loadbalance.rules import DISPATCH_RULES  # noqa: E402
from dreamalloc.report.stats import mean_ci  # noqa: E402

# docs/reference.md section 3: mean job time over 1,000 episodes measured on Park's own code (2026-12-04)
PARK = {"greedy": 965, "greedy_obs": 940, "jsq": 1119, "rate_random": 5166, "round_robin": 15483, "random": 16201}
FORK = {"greedy": 745, "jsq": 795, "rate_random": 3268, "round_robin": 12757, "random": 13469}  # ratnadeepb/park


def fmt(ci) -> str:
    return f"{ci[0]:,.2f} [{ci[1]:,.2f}, {ci[2]:,.2f}]"


def variant(size_max: float, load_obs: str) -> str:
    """How a table's env reads in words: the job law and the observation."""
    cap = f"sizes capped at {size_max:,.0f}" if size_max else "sizes uncapped"
    obs = "+ running job's remaining time" if load_obs == "time" else "+ running job's remaining work"
    name = {(0, "time"): "park-project/park as it is", (FORK_SIZE_MAX, "work"): "the fork's options"}.get(
        (size_max, load_obs), "a custom variant")
    return f"{name}: {cap}; observed load = queued sizes {obs} (size_max={size_max:g}, load_obs={load_obs})"


def obs_greedy_times(cfg: LoadBalanceConfig, episodes: int, seed: int) -> np.ndarray:
    """[episodes] mean job times of greedy on the observation: argmin (observed load + size) / rate."""
    core = LoadBalanceCore(episodes, cfg)
    S = cfg.num_servers

    def policy(obs, info):
        x = obs.double() / cfg.obs_scale
        return ((x[:, :S] + x[:, S:S + 1]) / core.rates).argmin(1)

    return run_episodes(core, policy, seed)["mean_job_time"][:, 0]


def park(episodes: int, seed: int, size_max: float = 0, load_obs: str = "time") -> None:
    cfg = LoadBalanceConfig(size_max=size_max, load_obs=load_obs).validate()
    ref = PARK if size_max == 0 else FORK if size_max == FORK_SIZE_MAX else {}
    print(f"Park's defaults, {variant(size_max, load_obs)}; {episodes} episodes (stream seeds {seed}.."
          f"{seed + episodes - 1}); reference: {'park-project/park' if size_max == 0 else 'ratnadeepb/park'} "
          "(docs/reference.md section 3)\n")
    print("| rule | mean job time [95 % t-CI over episodes] | median over episodes | Park's code | ours / Park |")
    print("|---|---:|---:|---:|---:|")
    rows = [(rule, dispatch_returns(rule, cfg, episodes, seed)["mean_job_time"][:, 0]) for rule in DISPATCH_RULES]
    rows.insert(1, ("greedy_obs", obs_greedy_times(cfg, episodes, seed)))
    for rule, t in rows:
        r = ref.get(rule)
        label = "greedy on the observation" if rule == "greedy_obs" else rule
        print(f"| {label} | {fmt(mean_ci(t))} | {np.median(t):,.1f} | {f'{r:,}' if r else '-'} | "
              f"{f'{t.mean() / r:.2f}' if r else '-'} |", flush=True)
    b = -no_wait_bound(cfg, episodes, seed)[:, 0].numpy() / cfg.num_jobs
    print(f"| no-wait bound | {fmt(mean_ci(b))} | {np.median(b):,.1f} | - | - |")


def experiment(name: str, overrides: list[str] = ()) -> None:
    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401
    from dreamalloc.experiment.config import env_config, tasks_of

    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}", *overrides])
    trials, k, seed = int(cfg.eval.trials), int(cfg.eval.episodes_per_trial), int(cfg.eval.seed)
    print(f"experiment={name} {' '.join(overrides)}".rstrip() + f" ({variant(cfg.env.size_max, cfg.env.load_obs)}): "
          f"{trials} trials x {k} episodes per held-out task, stream seeds {seed} + t; "
          "return [95 % t-CI over per-trial means]; mean job time; first / last episode of a trial\n")
    print("| set | task | rule | return | mean job time | first_ep | last_ep |")
    print("|---|---|---|---:|---:|---:|---:|")
    for set_name, tasks in cfg.suite.heldout.items():
        for task in tasks_of(tasks):
            c = env_config(cfg.env, [task])
            c.trial_episodes = k
            for rule in DISPATCH_RULES:
                r = dispatch_returns(rule, c, trials, seed, k)
                ret = r["return"]
                print(f"| {set_name} | {task['name']} | {rule} | {fmt(mean_ci(ret.mean(1)))} | "
                      f"{r['mean_job_time'].mean():,.0f} | {ret[:, 0].mean():.2f} | {ret[:, -1].mean():.2f} |",
                      flush=True)
            b = no_wait_bound(c, trials, seed, k).numpy()
            print(f"| {set_name} | {task['name']} | no-wait bound | {fmt(mean_ci(b.mean(1)))} | "
                  f"{-b.mean() / (c.num_jobs * c.reward_scale):,.0f} | | |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", help="a load-balance experiment preset (conf/experiment)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of --experiment (e.g. env.size_max=10000)")
    p.add_argument("--park", type=int, default=0, metavar="EPISODES", help="Park's defaults, this many episodes")
    p.add_argument("--seed", type=int, default=0, help="first stream seed of --park")
    p.add_argument("--size-max", type=float, default=0,
                   help=f"job size cap of --park (default 0: uncapped, park-project/park; {FORK_SIZE_MAX}: the fork's)")
    p.add_argument("--load-obs", choices=LOAD_OBS, default="time",
                   help="observed load of --park: time (default, Park as it is) or work (Park before 2019-03)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if not args.experiment and not args.park:
        p.error("give --experiment NAME or --park EPISODES")
    if args.overrides and not args.experiment:
        p.error(f"Hydra overrides {args.overrides} need --experiment NAME (for --park use --size-max / --load-obs)")
    if args.size_max < 0:
        p.error(f"--size-max must be >= 0 (0: uncapped), got {args.size_max:g}")
    if args.park:
        park(args.park, args.seed, args.size_max, args.load_obs)
    if args.experiment:
        experiment(args.experiment, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
