"""Fixed rules as agents: the baselines every table compares with (``agent=heuristic``: a placement rule of the
allocation family; ``agent=dispatch``: a dispatch rule of load balancing).

The rules themselves belong to their env family (``EnvFamily.fixed_policy``: they may read what their domain
shows, e.g. the occupancy bitmap or the servers' work in the info); the experiment layer builds the family's rule
and hands it in as ``policy``. This module knows no domain: an agent here carries the rule's name, calls it, and
keeps its state (a random rule's generator) in checkpoints. Adding a family's rules needs no change here unless
the family wants an agent name of its own (a subclass with ``name`` and ``Config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dreamalloc.agents.base import Agent
from dreamalloc.core.checks import NONNEG


@dataclass
class HeuristicConfig:
    name: str = "heuristic"
    rule: str = "best"  # a placement rule of the allocation family: first | next | best | worst | second


@dataclass
class DispatchConfig:
    RANGES: ClassVar[dict] = {"seed": NONNEG}
    name: str = "dispatch"
    rule: str = "greedy"  # a dispatch rule of load balancing: greedy | jsq | p2c | round_robin | rate_random | random
    seed: int = 0  # of the random rules' generator


class FixedAgent(Agent):
    """Plays ``policy`` (a family's fixed rule: ``initial_state(B)``, ``act(obs, state, info) -> (actions,
    state)``, ``state_dict()``, ``load_state_dict()``); learns nothing."""

    fixed: ClassVar[bool] = True

    def __init__(self, obs_dim, n_actions, env, device, rule: str = "", policy: Any = None, seed: int = 0):
        super().__init__(obs_dim, n_actions, env, device)
        if policy is None:
            raise ValueError(f"agent={self.name} plays a fixed rule of the env's family, which the experiment layer "
                             "builds (training.build_agent); pass policy=FAMILY.fixed_policy(rule, env_config)")
        self.rule, self.policy = rule, policy

    def meta(self) -> dict:
        return {**super().meta(), "rule": self.rule}

    def initial_state(self, batch: int):
        return self.policy.initial_state(batch)

    def act(self, obs, state, info, deterministic=False):
        return self.policy.act(obs, state, info)

    def state_dict(self, include_replay: bool = True) -> dict:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state)


class HeuristicAgent(FixedAgent):
    name = "heuristic"
    Config = HeuristicConfig


class DispatchAgent(FixedAgent):
    name = "dispatch"
    Config = DispatchConfig


__all__ = ["DispatchAgent", "FixedAgent", "HeuristicAgent"]
