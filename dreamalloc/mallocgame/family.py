"""The mallocGame family's registration (``env.kind: mallocgame``): its config schema, how its core is built from an
env node and a task list (which programs the rows play), its fixed rules (``first_gap``: every buffer at the
bottom of the lowest feasible gap, else slow memory; ``slow``: everything in slow memory) and its bound (every
buffer in fast memory: a return of 1 with ``normalize_reward``, the program's total benefit otherwise)."""

from __future__ import annotations

import numpy as np
import torch

from dreamalloc.core.checks import COUNT
from dreamalloc.core.family import EnvFamily, References, core_builder, env_schema, register_family
from dreamalloc.core.rollout import run_episodes
from dreamalloc.mallocgame.config import STREAMS, MallocGameConfig
from dreamalloc.mallocgame.env import MallocGameCore

RULES = ("first_gap", "slow")

MallocGameEnvConf = env_schema(  # conf/env/mallocgame.yaml: MallocGameConfig's options but the tasks
    "MallocGameEnvConf", MallocGameConfig, kind="mallocgame", exclude=("tasks",),
    ranges={"num_envs": COUNT, "n_gaps": COUNT, "addr_bins": COUNT, "trial_episodes": COUNT})


def mg_config(env: dict, tasks: list[dict]) -> MallocGameConfig:
    e = {k: v for k, v in env.items() if k not in ("num_envs", "kind")}
    return MallocGameConfig(tasks=list(tasks), **e).validate()


make_core = core_builder(mg_config, MallocGameCore)


class GapRule:
    """A fixed rule of the game as a policy: ``first_gap`` takes the lowest feasible gap (action 0) when the mask
    allows it, else slow memory (action K); ``slow`` always takes slow memory."""

    def __init__(self, rule: str, cfg: MallocGameConfig, seed: int = 0, device="cpu"):
        if rule not in RULES:
            raise ValueError(f"unknown mallocgame rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule, self.K = rule, int(cfg.n_gaps)

    def initial_state(self, batch: int):
        return None

    def act(self, obs, state, info):
        slow = torch.full((obs.shape[0],), self.K, dtype=torch.long, device=obs.device)
        if self.rule == "slow":
            return slow, state
        return torch.where(info["action_mask"][:, 0].to(obs.device), 0, slow), state

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def references(core: MallocGameCore, trials: int, seed: int, k: int, device) -> References:
    out, totals = {}, None
    for rule in RULES:
        ref = MallocGameCore(trials, core.cfg, device=device)
        policy = GapRule(rule, core.cfg)
        res = run_episodes(ref, lambda obs, info, p=policy: p.act(obs, None, info)[0], seed, k)
        out[rule] = res["return"]
        if rule == "first_gap":  # fast_benefit / benefit_fraction at the episode's end give its total benefit
            frac = np.where(res["benefit_fraction"] > 0, res["benefit_fraction"], 1.0)
            totals = np.where(res["benefit_fraction"] > 0, res["fast_benefit"] / frac, np.nan)
    bound = np.ones((trials, k)) if core.cfg.normalize_reward else totals
    return References(out, bound)


FAMILY = register_family(EnvFamily(
    kind="mallocgame", schema=MallocGameEnvConf, make_core=make_core, env_config=mg_config, references=references,
    fixed_policy=GapRule, rules=RULES, metrics=("benefit_fraction", "fast_buffers"),
    agent_names=("heuristic",), streams=lambda stream: stream in STREAMS, env_choices=("mallocgame",),
    report_columns=("benefit_fraction",)))

__all__ = ["FAMILY", "RULES", "GapRule", "MallocGameEnvConf", "mg_config"]
