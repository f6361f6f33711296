"""Train PPO / DQN / Dreamer on mallocGame at equal env steps and compare them with the game heuristics, the
XLA-style greedy solver and the MILP optimum on the recorded programs (training and held-out sets).

Training: ``--envs`` rows of the batched core, tasks = the ``train`` programs plus (``--synthetic`` weight) the
synthetic family; ``make_agent(name, obs_dim, n_actions, None, "cpu", **hp)`` with the act / observe / update
cycle of train.py. Evaluation: every recorded program, one episode each, greedy (deterministic) actions.

    python scripts/mallocgame_train.py --agents ppo dqn dreamer --seeds 0 1 2 --steps 20000 --out results.json
    python scripts/mallocgame_train.py --solvers-only --out solvers.json   # heuristics, greedy and MILP only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamalloc.core.driver import drive  # noqa: E402
from dreamalloc.mallocgame import MallocGameCore  # noqa: E402
from dreamalloc.mallocgame.instances import make_instance, program_set  # noqa: E402
from dreamalloc.mallocgame.solvers import SOLVERS, check_placement, milp  # noqa: E402

HP = {
    "ppo": {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "gamma": 1.0, "gae_lambda": 0.95, "lr": 3e-4,
            "ent_coef": 0.01, "hidden": [128, 128]},
    "dqn": {"lr": 5e-4, "gamma": 1.0, "learning_starts": 1000, "batch_size": 64, "train_freq": 1,
            "gradient_steps": 1, "target_update_interval": 1000, "exploration_fraction": 0.3,
            "exploration_final_eps": 0.02, "hidden": [128, 128], "buffer_size": 100_000},
    "dreamer": {"deter": 128, "hidden": 64, "units": 128, "blocks": 4, "classes": 8, "stoch": 8, "batch_size": 8,
                "batch_length": 32, "train_ratio": 8, "learning_starts": 1000, "replay_size": 100_000,
                "warmup": 100, "lr": 3e-4, "enc_layers": 2, "dec_layers": 2, "ac_layers": 2},
}
SETS = ("train", "heldout_models", "heldout_batch")


def train_tasks(synthetic: float) -> list[dict]:
    tasks = [{"name": "train", "stream": "programs", "params": {"set": "train"}, "weight": 1.0}]
    if synthetic > 0:
        tasks.append({"name": "synthetic", "stream": "synthetic", "params": {"n_buffers": 48}, "weight": synthetic})
    return tasks


def game_policy(name: str):
    """Fixed policies that play the game itself: first_fit (the lowest feasible gap), best_fit (the smallest
    feasible gap among the K offered), slow (everything in slow memory)."""
    def act(obs, info):
        mask = info["action_mask"]
        K = mask.shape[1] - 1
        if name == "slow":
            return torch.full((mask.shape[0],), K, dtype=torch.long)
        if name == "first_fit":
            return torch.where(mask[:, 0], 0, K)
        length = torch.where(mask[:, :K], info["gap_length"], 1 << 62)
        return torch.where(mask[:, 0], length.argmin(1), K)
    return act


def play(inst_set: str, policy) -> dict:
    """One episode of ``policy(obs, info) -> actions`` on every program of a set: {name: (fraction, offsets)}."""
    out = {}
    for inst in program_set(inst_set):
        core = MallocGameCore(1, tasks=[{"stream": "programs", "params": {"set": inst_set, "models":
                                                                          [inst.meta["model"]], "batches":
                                                                          [inst.meta["batch"]]}}], autoreset=False)
        obs, info = core.reset(seed=0)
        done = False
        while not done:
            obs, _, term, trunc, info = core.step(policy(obs, info))
            done = bool(term[0] | trunc[0])
        p = core.domain.placement(0)
        frac = check_placement(inst, p["offset"]) / inst.total_benefit
        assert abs(frac - float(info["benefit_fraction"][0])) < 1e-9
        out[inst.name] = (frac, p["offset"].tolist())
    return out


def agent_policy(agent):
    state = {}

    def act(obs, info):
        if "s" not in state or bool(info["episode_start"][0]):
            state["s"] = agent.initial_state(obs.shape[0])
        with torch.no_grad():
            a, state["s"] = agent.act(obs, state["s"], info, True)
        return a
    return act


def train(name: str, seed: int, steps: int, envs: int, synthetic: float) -> tuple[object, dict]:
    from dreamalloc.agents import make_agent

    torch.manual_seed(seed)
    core = MallocGameCore(envs, tasks=train_tasks(synthetic))
    hp = dict(HP[name])
    if name in ("ppo", "dqn"):
        hp["total_steps"] = steps
    agent = make_agent(name, core.obs_dim, core.n_actions, None, "cpu", **hp)
    t0 = time.perf_counter()
    finished = drive(agent, core, steps, seed=1000 * seed)  # the act / step / observe / update cycle of train.py
    tail = finished[-50:]
    return agent, {"train_seconds": time.perf_counter() - t0, "episodes": len(finished),
                   "last50_train_return": float(np.mean(tail)) if tail else None}


def with_capacity(inst, frac: float):
    """The program with capacity ``frac`` x its peak live bytes (at least its largest buffer)."""
    cap = max(int(frac * inst.peak_live()), int(inst.size.max()))
    return make_instance(inst.name, cap, inst.to_json()["buffers"], {**inst.meta, "capacity_frac": frac})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="*", default=["ppo", "dqn", "dreamer"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--synthetic", type=float, default=1.0, help="weight of the synthetic family in training")
    p.add_argument("--milp-seconds", type=float, default=10.0)
    p.add_argument("--solvers-only", action="store_true")
    p.add_argument("--capacity-frac", type=float, default=None,
                   help="with --solvers-only: give every program the capacity FRAC x its peak live bytes (at least "
                        "its largest buffer) instead of the recorded half of the peak; the game policies are "
                        "then not played")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.capacity_frac is not None and not (args.solvers_only and 0 < args.capacity_frac <= 1):
        p.error("--capacity-frac goes with --solvers-only and must lie in (0, 1]")
    torch.set_num_threads(1)
    res = {"args": vars(args), "programs": {}, "agents": {}}
    if args.solvers_only:
        for s in SETS:
            for inst in program_set(s):
                if args.capacity_frac is not None:
                    inst = with_capacity(inst, args.capacity_frac)
                tb = inst.total_benefit
                row = {"set": s, "n": inst.n, "capacity": inst.capacity, "total_benefit": tb}
                for k, f in SOLVERS.items():
                    off = f(inst)
                    row[k] = check_placement(inst, off) / tb
                    if k == "greedy_size":
                        row["greedy_size_offsets"] = off.tolist()
                m = milp(inst, args.milp_seconds)
                row.update(milp_value=m["value"] / tb, milp_bound=m["bound"] / tb, milp_optimal=m["optimal"],
                           milp_seconds=m["seconds"], milp_offsets=m["offsets"].tolist())
                res["programs"][inst.name] = row
                print(inst.name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                                  if not k.endswith("offsets")}, flush=True)
        for rule in ("first_fit", "best_fit", "slow") if args.capacity_frac is None else ():
            for s in SETS:
                for name, (frac, _) in play(s, game_policy(rule)).items():
                    res["programs"][name]["game_" + rule] = frac
    for name in [] if args.solvers_only else args.agents:
        for seed in args.seeds:
            agent, log = train(name, seed, args.steps, args.envs, args.synthetic)
            policy = agent_policy(agent)
            ev = {s: play(s, policy) for s in SETS}
            res["agents"][f"{name}/{seed}"] = {**log, "eval": {s: {k: v[0] for k, v in e.items()} for s, e in
                                                               ev.items()},
                                               "offsets": {k: v[1] for e in ev.values() for k, v in e.items()}}
            print(name, seed, log, {s: round(float(np.mean([v[0] for v in e.values()])), 4) for s, e in ev.items()},
                  flush=True)
            Path(args.out).write_text(json.dumps(res))
    Path(args.out).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
