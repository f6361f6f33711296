"""A fixed placement rule as an agent: the baseline every table compares against.

In the ``heuristic`` action space it picks its rule's index; in the ``address`` and ``hole`` spaces it
recomputes the placement from the observed bitmap and request, so it runs in every action space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dreamalloc.agents.base import Agent
from dreamalloc.alloc.heap import RULES, FreeRuns, place_address
from dreamalloc.core.checks import OneOf


@dataclass
class HeuristicConfig:
    RANGES: ClassVar[dict] = {"rule": OneOf(tuple(RULES))}
    name: str = "heuristic"
    rule: str = "best"  # first | next | best | worst | second


class HeuristicAgent(Agent):
    name = "heuristic"
    Config = HeuristicConfig

    def __init__(self, obs_dim, n_actions, env, device, rule: str = "best"):
        super().__init__(obs_dim, n_actions, env, device)
        if rule not in RULES:
            raise ValueError(f"unknown heuristic rule {rule!r} for agent=heuristic; choose one of {', '.join(RULES)}")
        if getattr(env, "kind", "alloc") == "load_balance":
            raise ValueError("agent=heuristic places blocks on the allocation env; on the load-balance env "
                             "(env=load_balance) use agent=dispatch (agent.rule=greedy, jsq, ...)")
        self.rule = rule
        if env.action == "heuristic":
            if rule not in env.heuristics:
                raise ValueError(f"agent rule {rule!r} is not among the env's heuristic actions "
                                 f"{list(env.heuristics)}; add it to env.heuristics")
            self.index = list(env.heuristics).index(rule)
        else:
            if not env.bitmap:
                raise ValueError("agent=heuristic in the address / hole action space needs env.bitmap=true")
            if rule == "next":
                raise ValueError("next fit needs the heap's roving pointer, which is not observed; use the "
                                 "heuristic action space for next fit")

    def meta(self) -> dict:
        return {**super().meta(), "rule": self.rule}

    def act(self, obs, state, info, deterministic=False):
        B, N = obs.shape[0], self.env.cells
        if self.env.action == "heuristic":
            return torch.full((B,), self.index, dtype=torch.long, device=obs.device), state
        occ = obs[:, :N] > 0.5
        size = obs[:, N] * (1.0 if self.env.size_scale == "raw" else N)
        size = size.round().long()
        runs = FreeRuns.of(occ)
        addr = place_address(runs, size, self.rule, torch.zeros(B, dtype=torch.long, device=obs.device),
                             self.env.align)
        if self.env.action == "address":
            return addr.clamp(min=0), state
        fits = runs.fitting(size)
        rank = runs.rank(fits)  # the chosen run's rank among the runs that fit = the hole index
        chosen = fits & (runs.start == addr[runs.heap]) if self.env.align == "start" else fits & (
            runs.start + runs.length - size[runs.heap] == addr[runs.heap])
        hole = torch.zeros(B, dtype=torch.long, device=obs.device)
        hole[runs.heap[chosen]] = rank[chosen] - 1
        return hole.clamp(max=self.n_actions - 1), state
