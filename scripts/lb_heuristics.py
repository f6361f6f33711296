"""Every dispatch rule on the evaluation streams of a load-balance experiment, with 95 % t-intervals.

The same trials as the harness's evaluation (trial t on stream seed eval.seed + t, K episodes per trial), so
the rows line up with the learners' results; one batched run per rule and task instead of one evaluate.py
per rule. Also the Park check of docs/reference.md section 3 (mean job time on Park's defaults):

    python scripts/lb_heuristics.py --experiment redovian2025_standard
    python scripts/lb_heuristics.py --experiment redovian2025_adaptive
    python scripts/lb_heuristics.py --park 1000 --seed 0      # Park's env, 1,000 episodes of seeds 0..999
    python scripts/lb_heuristics.py --park 1000 --size-max 0  # the same without Park's 10,000 size cap
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dreamalloc.agents.dispatch import DISPATCH_RULES  # noqa: E402
from dreamalloc.envs.load_balance import PARK_SIZE_MAX, PARK_TASK, LoadBalanceConfig  # noqa: E402
from dreamalloc.envs.load_balance.rollout import dispatch_returns, no_wait_bound  # noqa: E402
from dreamalloc.report.stats import mean_ci  # noqa: E402

PARK = {"greedy": 770, "rate_random": 3440, "round_robin": 12150, "random": 14790}  # docs/reference.md section 3


def fmt(ci) -> str:
    return f"{ci[0]:,.2f} [{ci[1]:,.2f}, {ci[2]:,.2f}]"


def park(episodes: int, seed: int, size_max: int = PARK_SIZE_MAX) -> None:
    cfg = LoadBalanceConfig(tasks=[{**PARK_TASK, "params": {"size_max": size_max}}]).validate()
    cap = f"sizes capped at {size_max:,}" if size_max else "sizes uncapped"
    print(f"Park's defaults ({cap}), {episodes} episodes (stream seeds {seed}..{seed + episodes - 1})\n")
    print("| rule | mean job time [95 % t-CI over episodes] | median over episodes | Park's code | ours / Park |")
    print("|---|---:|---:|---:|---:|")
    for rule in DISPATCH_RULES:
        t = dispatch_returns(rule, cfg, episodes, seed)["mean_job_time"][:, 0]
        ref = PARK.get(rule)
        print(f"| {rule} | {fmt(mean_ci(t))} | {np.median(t):,.1f} | {ref or '-'} | "
              f"{f'{t.mean() / ref:.2f}' if ref else '-'} |")
    b = -no_wait_bound(cfg, episodes, seed)[:, 0].numpy() / cfg.num_jobs
    print(f"| no-wait bound | {fmt(mean_ci(b))} | {np.median(b):,.1f} | - | - |")


def experiment(name: str) -> None:
    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401
    from dreamalloc.experiment.config import env_config, tasks_of

    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"])
    trials, k, seed = int(cfg.eval.trials), int(cfg.eval.episodes_per_trial), int(cfg.eval.seed)
    print(f"experiment={name}: {trials} trials x {k} episodes per held-out task, stream seeds {seed} + t; "
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
    p.add_argument("--park", type=int, default=0, metavar="EPISODES", help="Park's defaults, this many episodes")
    p.add_argument("--seed", type=int, default=0, help="first stream seed of --park")
    p.add_argument("--size-max", type=int, default=PARK_SIZE_MAX,
                   help=f"job size cap of --park (default {PARK_SIZE_MAX:,}, Park's; 0: uncapped)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if not args.experiment and not args.park:
        p.error("give --experiment NAME or --park EPISODES")
    if args.size_max < 0:
        p.error(f"--size-max must be >= 0 (0: uncapped), got {args.size_max}")
    if args.park:
        park(args.park, args.seed, args.size_max)
    if args.experiment:
        experiment(args.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
