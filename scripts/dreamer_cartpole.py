"""DreamerV3 (1M preset) on CartPole-v1 on the CPU: a learning curve of deterministic evaluation returns.

    OMP_NUM_THREADS=1 python scripts/dreamer_cartpole.py --steps 50000 --seed 0 --out cartpole.json

``--diagnose FILE``: after training, the world-model and critic diagnostics of scripts/dreamer_diagnostics.py on
fresh CartPole rollouts of the trained policy, written to FILE (JSON) and printed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from dreamalloc.agents import make_agent
from dreamalloc.agents.dreamer.diagnostics import diagnose, report
from dreamalloc.core.driver import drive, evaluate
from dreamalloc.core.gym_vec import GymVecCore

# The 1M preset (conf/agent/dreamer_1m.yaml) with what a short CPU budget needs: a larger learning rate and a
# shorter warm-up (few updates), and imagination from the last 16 steps of each replayed sequence.
CARTPOLE = dict(deter=512, hidden=64, classes=4, units=64, lr=3e-4, warmup=100, train_ratio=64.0,
                learning_starts=1024, imag_last=16, replay_size=100_000)


def run(steps: int = 50_000, seed: int = 0, envs: int = 4, eval_every: int = 5000, eval_episodes: int = 10,
        final_episodes: int = 20, log=print, diagnose_steps: int = 0, **overrides) -> dict:
    """Train and evaluate; ``diagnose_steps`` > 0: also the trained agent's diagnostics on that many steps of 4
    fresh envs (``result["diagnostics"]``)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    hp = {**CARTPOLE, **overrides}
    core = GymVecCore("CartPole-v1", envs)
    agent = make_agent("dreamer", core.obs_dim, core.n_actions, None, "cpu", **hp)
    curve, t0 = [], time.perf_counter()
    next_eval = [eval_every]

    def on_step(step: int, train_returns: list[float]) -> bool:
        if step >= next_eval[0] or step >= steps:
            next_eval[0] += eval_every
            n = final_episodes if step >= steps else eval_episodes
            ret = float(evaluate(agent, GymVecCore("CartPole-v1", min(n, 10)), n, seed=10_000 + seed).mean())
            point = {"step": step, "eval_return": ret, "wall_s": round(time.perf_counter() - t0, 1),
                     "updates": agent.n_updates, "train_return_100": float(np.mean(train_returns[-100:]))
                     if train_returns else float("nan")}
            curve.append(point)
            log(json.dumps(point))
        return False

    drive(agent, core, steps, seed=seed, on_step=on_step)
    return {"seed": seed, "steps": steps, "hparams": hp, "curve": curve, "final_eval_return": curve[-1]["eval_return"],
            "wall_s": round(time.perf_counter() - t0, 1),
            **({"diagnostics": diagnose(agent, GymVecCore("CartPole-v1", 4), diagnose_steps, seed=12_345)}
               if diagnose_steps else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--envs", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=5000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--diagnose", default=None, help="write the trained agent's diagnostics (JSON) here")
    ap.add_argument("--set", nargs="*", default=[], help="hyperparameter overrides KEY=VALUE (python literals)")
    a = ap.parse_args()
    import ast
    overrides = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in a.set)}
    res = run(a.steps, a.seed, a.envs, a.eval_every, diagnose_steps=1500 if a.diagnose else 0, **overrides)
    diag = res.pop("diagnostics", None)
    if diag is not None:
        print(report(a.steps, diag))
        with open(a.diagnose, "w") as f:
            json.dump(diag, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "curve"}))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
