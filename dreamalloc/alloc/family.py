"""The allocation family's registration (``env.kind: alloc``): its config schema, how its core is built from an env
node and a task list, its fixed policies (the placement rules), its references (every rule and the capacity
bound on the same streams), the metrics its tables report and the heap picture of its timelines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.alloc.heap import RULES, place_address
from dreamalloc.alloc.references import capacity_bound, env_kwargs, heuristic_returns
from dreamalloc.core.checks import COUNT, FINITE, NONNEG, ge
from dreamalloc.core.family import EnvFamily, References, register_family

METRICS = ("frag_largest", "frag_runs", "utilisation", "allocations", "free_runs", "largest_free")


@dataclass
class AllocEnvConf:
    """The allocation env group (``conf/env/alloc*.yaml``): every option of ``AllocConfig`` but the stream, which
    the suite's tasks give, plus the number of heaps."""

    RANGES: ClassVar[dict] = {"num_envs": COUNT, "cells": ge(2), "holes": COUNT, "history": NONNEG,
                              "hole_features": NONNEG, "alloc_reward": FINITE, "invalid_reward": FINITE,
                              "max_allocs": COUNT, "trial_episodes": COUNT}
    kind: str = "alloc"
    num_envs: int = 16
    cells: int = 256
    action: str = "heuristic"
    heuristics: list[str] = field(default_factory=lambda: ["best", "worst", "first"])
    holes: int = 8
    align: str = "start"
    bitmap: bool = True
    history: int = 0
    summary: bool = False
    hole_features: int = 0
    size_scale: str = "raw"
    alloc_reward: float = 0.1
    invalid_reward: float = -10.0
    terminal_reward: str = "lim"
    max_allocs: int | None = None
    max_invalid: int | None = None  # address / hole spaces: truncate after this many invalid actions (None: max_allocs)
    trial_episodes: int = 1  # K episodes per meta-RL trial in training (evaluation uses eval.episodes_per_trial)
    meta_obs: bool = False  # previous action / reward / episode-start flag in the observation (RL^2 agents)
    task_obs: bool = False  # the task id in the observation (an oracle; never for adaptive agents)
    skip_forced: bool = False  # heuristic space: the env places requests on which every rule agrees itself


def alloc_config(env: dict, tasks: list[dict]) -> AllocConfig:
    """The AllocConfig of an env node plus a task list (one task: its stream; several: a task stream)."""
    e = {k: v for k, v in env.items() if k not in ("num_envs", "kind")}
    e["heuristics"] = tuple(e["heuristics"])
    if len(tasks) == 1 and not tasks[0].get("ranges") and not tasks[0].get("choices"):
        stream, params = tasks[0]["stream"], dict(tasks[0].get("params") or {})
    else:
        stream, params = "tasks", {"tasks": tasks}
    return AllocConfig(stream=stream, stream_params=params, **e).validate()


def make_core(env: dict, tasks: list[dict], num_envs: int, device, autoreset: bool = True,
              trial_episodes: int | None = None) -> AllocCore:
    cfg = alloc_config(env, tasks)
    if trial_episodes is not None:
        cfg.trial_episodes = int(trial_episodes)
    return AllocCore(int(num_envs), cfg, device=device, autoreset=autoreset)


def references(core: AllocCore, trials: int, seed: int, k: int, device) -> References:
    """Every placement rule and the capacity bound on the streams of ``core``'s config, trials x k episodes."""
    kw = env_kwargs(core.cfg)
    rules = {r: heuristic_returns(r, trials, seed, device, k, **kw)["return"].reshape(trials, k) for r in RULES}
    bound = capacity_bound(trials, seed, device, k, **kw)["return"].reshape(trials, k)
    return References(rules, bound)


class PlacementRule:
    """A fixed placement rule in any action space: in the heuristic space its index among the env's rules; in the
    address and hole spaces the address (or the hole) the rule picks on the heap's current free runs."""

    def __init__(self, rule: str, core: AllocCore):
        cfg = core.cfg
        if rule not in RULES:
            raise ValueError(f"unknown placement rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule, self.core = rule, core
        if cfg.action == "heuristic" and rule not in cfg.heuristics:
            raise ValueError(f"placement rule {rule!r} is not among the env's heuristic actions "
                             f"{list(cfg.heuristics)}; add it to env.heuristics")
        self.index = list(cfg.heuristics).index(rule) if cfg.action == "heuristic" else None

    def initial_state(self, batch: int):
        return None

    def act(self, obs, state, info):
        core, cfg = self.core.domain, self.core.cfg
        B = obs.shape[0]
        if self.index is not None:
            return torch.full((B,), self.index, dtype=torch.long, device=obs.device), state
        runs, size = core.runs, core.request
        addr = place_address(runs, size, self.rule, core.heaps.rover, cfg.align)
        if cfg.action == "address":
            return addr.clamp(min=0), state
        fits = runs.fitting(size)
        rank = runs.rank(fits)  # the chosen run's rank among the runs that fit = the hole index
        end = runs.start + runs.length - size[runs.heap]
        chosen = fits & ((runs.start if cfg.align == "start" else end) == addr[runs.heap])
        hole = torch.zeros(B, dtype=torch.long, device=obs.device)
        hole[runs.heap[chosen]] = rank[chosen] - 1
        return hole.clamp(max=cfg.holes - 1), state


def fixed_policy(rule: str, core: AllocCore, seed: int = 0) -> PlacementRule:
    return PlacementRule(rule, core)


def heap_frame(core: AllocCore) -> torch.Tensor:
    """Heap 0's owner map (one block id per cell), for timelines."""
    return core.heaps.owner[0].cpu().clone()


FAMILY = register_family(EnvFamily(
    kind="alloc", schema=AllocEnvConf, make_core=make_core, env_config=alloc_config, references=references,
    fixed_policy=fixed_policy, rules=tuple(RULES), metrics=METRICS, frame=heap_frame, agent_names=("heuristic",)))

__all__ = ["FAMILY", "METRICS", "AllocEnvConf", "PlacementRule", "alloc_config", "make_core"]
