"""The adaptation evaluation protocol, the same for every method.

On each task of each held-out set: ``trials`` trials of K episodes, trial t on stream seed
``eval.seed + t`` (identical across methods and training seeds, so comparisons are paired). The agent's
recurrent state starts fresh at each trial and is kept across its K episodes. Alongside, on exactly the
same streams: every fixed heuristic (the hindsight-best one is reported) and the capacity bound.
Trials are the independent units of the confidence intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamalloc.agents.base import Agent
from dreamalloc.alloc.env import AllocCore
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.references import capacity_bound, env_kwargs, heuristic_returns, run_episodes
from dreamalloc.experiment.config import alloc_config, env_config, tasks_of

METRIC_KEYS = ("frag_largest", "frag_runs", "utilisation", "allocations", "free_runs", "largest_free")
SCHEMA = 1


def agent_policy(agent: Agent, core, task: dict, trials: int, deterministic: bool):
    """The agent as a ``policy(obs, info)`` over ``trials`` envs, its recurrent state kept across calls (fresh
    per trial: the core flags trial starts); refuses an env of another shape than the agent's."""
    if core.cfg.obs_dim != agent.obs_dim or core.cfg.n_actions != agent.n_actions:
        raise ValueError(f"the agent expects observations of {agent.obs_dim} values and {agent.n_actions} "
                         f"actions, but the evaluation env of task {task['name']!r} has {core.cfg.obs_dim} and "
                         f"{core.cfg.n_actions}; evaluate with the env config the agent was trained on")
    state = [agent.initial_state(trials)]

    def policy(obs, info):
        with torch.no_grad():
            a, state[0] = agent.act(obs, state[0], info, deterministic)
        return a

    return policy


def evaluate_task(agent: Agent, env, task: dict, trials: int, k: int, seed: int, device: torch.device,
                  deterministic: bool = True, timeline: bool = False) -> dict[str, Any]:
    cfg = alloc_config(env, [task])
    cfg.trial_episodes = k  # a trial is the K evaluation episodes: one task, the agent's state kept
    core = AllocCore(trials, cfg, device=device)
    policy = agent_policy(agent, core, task, trials, deterministic)
    res = run_episodes(core, policy, seed, k, timeline=timeline)
    out: dict[str, Any] = {
        "returns": res["return"].tolist(),
        "metrics": {m: res[m].astype(float).tolist() for m in METRIC_KEYS if m in res},
    }
    kw = env_kwargs(core.cfg)
    per_rule = {r: heuristic_returns(r, trials, seed, device, k, **kw)["return"].reshape(trials, k) for r in RULES}
    best = max(RULES, key=lambda r: float(per_rule[r].mean()))
    out["hindsight_best"] = {"rule": best, "returns": per_rule[best].tolist()}
    out["heuristics"] = {r: float(v.mean()) for r, v in per_rule.items()}
    out["capacity_bound"] = capacity_bound(trials, seed, device, k, **kw)["return"].reshape(trials, k).tolist()
    if timeline:
        out["_timeline"] = res["timeline"]
    return out


def evaluate_lb_task(agent: Agent, env, task: dict, trials: int, k: int, seed: int, device: torch.device,
                     deterministic: bool = True, timeline: bool = False) -> dict[str, Any]:
    """The same protocol on the load-balancing env: the references are every dispatch rule (the hindsight
    best is reported) and the no-wait bound (every job served at once by the fastest server)."""
    from dreamalloc.agents.dispatch import DISPATCH_RULES
    from dreamalloc.loadbalance import LoadBalanceCore
    from dreamalloc.loadbalance.references import dispatch_returns, no_wait_bound, run_episodes

    cfg = env_config(env, [task])
    cfg.trial_episodes = k
    core = LoadBalanceCore(trials, cfg, device=device)
    policy = agent_policy(agent, core, task, trials, deterministic)
    res = run_episodes(core, policy, seed, k)
    per_rule = {r: dispatch_returns(r, core.cfg, trials, seed, k, device) for r in DISPATCH_RULES}
    best = max(DISPATCH_RULES, key=lambda r: float(per_rule[r]["return"].mean()))
    return {"returns": res["return"].tolist(),
            "metrics": {"mean_job_time": res["mean_job_time"].tolist()},
            "hindsight_best": {"rule": best, "returns": per_rule[best]["return"].tolist()},
            "heuristics": {r: float(v["return"].mean()) for r, v in per_rule.items()},
            "heuristic_job_time": {r: float(v["mean_job_time"].mean()) for r, v in per_rule.items()},
            "capacity_bound": no_wait_bound(core.cfg, trials, seed, k, device).tolist()}


def evaluate_suite(agent: Agent, env, suite, eval_cfg, device, method: str, seed: int, step: int) -> dict:
    """The results document (schema in dreamalloc/report/results.py); timelines under ``_timelines``."""
    results: dict[str, Any] = {"schema": SCHEMA, "method": method, "seed": int(seed), "suite": str(suite.name),
                               "step": int(step), "episodes_per_trial": int(eval_cfg.episodes_per_trial),
                               "sets": {}}
    timelines: dict[str, np.ndarray] = {}
    first = True
    kind = env.get("kind", "alloc") if isinstance(env, dict) else getattr(env, "kind", "alloc")
    evaluate_one = evaluate_lb_task if kind == "load_balance" else evaluate_task
    for set_name, tasks in suite.heldout.items():
        set_out: dict[str, Any] = {"tasks": {}}
        for task in tasks_of(tasks):
            r = evaluate_one(agent, env, task, int(eval_cfg.trials), int(eval_cfg.episodes_per_trial),
                              int(eval_cfg.seed), device, bool(eval_cfg.deterministic),
                              timeline=bool(eval_cfg.timeline) and first)
            if "_timeline" in r:
                timelines[f"{set_name}/{task['name']}"] = r.pop("_timeline")
                first = False
            set_out["tasks"][task["name"]] = r
        results["sets"][str(set_name)] = set_out
    results["_timelines"] = timelines
    return results


def summary(results: dict) -> dict[str, float]:
    """Flat scalars for the logger: mean, first- and last-episode return per set/task."""
    out = {}
    for set_name, s in results["sets"].items():
        for task, t in s["tasks"].items():
            r = np.asarray(t["returns"], dtype=float)
            out[f"eval/{set_name}/{task}/return"] = float(r.mean())
            out[f"eval/{set_name}/{task}/return_first"] = float(r[:, 0].mean())
            out[f"eval/{set_name}/{task}/return_last"] = float(r[:, -1].mean())
    return out
