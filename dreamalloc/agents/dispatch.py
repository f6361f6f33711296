"""Classic dispatch rules for load balancing as an agent: the baselines every load-balance table compares with.

Rules read what a dispatcher in front of real servers knows: each server's true outstanding work
(``info["work"]``: queued sizes + the running job's work left, whatever the env's ``load_obs`` shows the agent)
and its number of jobs (``info["queue"]``), the incoming job's size and the service rates:

* ``greedy``: least expected finish time, argmin (work + size) / rate (Park's reference heuristic; docs/reference.md
  section 3 "greedy least (true work + size) / rate");
* ``jsq``: join the shortest queue (fewest jobs; ties to the faster server);
* ``p2c``: power of two choices: two distinct servers uniformly at random, the one with fewer jobs;
* ``round_robin``: servers 0, 1, ..., S-1 in turn, restarting at every episode;
* ``rate_random``: a server drawn with probability proportional to its rate;
* ``random``: a server drawn uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dreamalloc.agents.base import Agent
from dreamalloc.core.checks import NONNEG, OneOf

DISPATCH_RULES = ("greedy", "jsq", "p2c", "round_robin", "rate_random", "random")


@dataclass
class DispatchConfig:
    RANGES: ClassVar[dict] = {"rule": OneOf(DISPATCH_RULES), "seed": NONNEG}
    name: str = "dispatch"
    rule: str = "greedy"  # greedy | jsq | p2c | round_robin | rate_random | random
    seed: int = 0  # of the random rules' generator


def dispatch(rule: str, info: dict, rates: torch.Tensor, gen: torch.Generator | None = None,
             counter: torch.Tensor | None = None) -> torch.Tensor:
    """Servers [B] chosen by ``rule`` from a load-balance env's info (see the module docstring)."""
    load, queue = info["work"], info["queue"]
    B, S = load.shape
    dev = load.device
    if rule == "greedy":
        return ((load.double() + info["job_size"].double()[:, None]) / rates).argmin(1)
    if rule == "jsq":  # fewest jobs, then the fastest server among them
        return (queue.double() - rates / (rates.max() + 1.0)).argmin(1)
    if rule == "round_robin":
        return counter % S
    if rule == "random":
        return torch.randint(S, (B,), generator=gen, device="cpu").to(dev)
    if rule == "rate_random":
        return torch.multinomial(rates.float().cpu().expand(B, S), 1, generator=gen).squeeze(1).to(dev)
    if rule == "p2c":
        pick = torch.rand(B, S, generator=gen, device="cpu").argsort(1)[:, :2].to(dev)
        q = queue.gather(1, pick)
        return torch.where(q[:, 1] < q[:, 0], pick[:, 1], pick[:, 0])
    raise ValueError(f"unknown dispatch rule {rule!r}; choose one of {', '.join(DISPATCH_RULES)}")


class DispatchAgent(Agent):
    name = "dispatch"
    Config = DispatchConfig

    def __init__(self, obs_dim, n_actions, env, device, rule: str = "greedy", seed: int = 0):
        super().__init__(obs_dim, n_actions, env, device)
        if rule not in DISPATCH_RULES:
            raise ValueError(f"unknown dispatch rule agent.rule={rule!r}; choose one of {', '.join(DISPATCH_RULES)}")
        if getattr(env, "kind", None) != "load_balance":
            raise ValueError("agent=dispatch needs a load-balance env (env=load_balance); for the allocator use "
                             "agent=heuristic")
        self.rule = rule
        self.rates = torch.tensor(env.service_rates, dtype=torch.float64, device=device)
        self.gen = torch.Generator().manual_seed(int(seed))

    def meta(self) -> dict:
        return {**super().meta(), "rule": self.rule}

    def initial_state(self, batch: int):
        return torch.zeros(batch, dtype=torch.long, device=self.device) if self.rule == "round_robin" else None

    def act(self, obs, state, info, deterministic=False):
        if self.rule == "round_robin":
            state = torch.where(info["episode_start"].to(state.device), 0, state)
        a = dispatch(self.rule, info, self.rates, self.gen, state)
        return a, (state + 1 if self.rule == "round_robin" else state)

    def state_dict(self, include_replay: bool = True) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "gen" in state:
            self.gen.set_state(state["gen"])
