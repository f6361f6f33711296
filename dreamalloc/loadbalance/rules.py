"""Classic dispatch rules for load balancing: the fixed policies every load-balance table compares with (and that
``agent=dispatch`` plays).

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

import torch

DISPATCH_RULES = ("greedy", "jsq", "p2c", "round_robin", "rate_random", "random")


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


class DispatchRule:
    """A dispatch rule as a fixed policy: ``act(obs, state, info)`` reads the info of ``LoadBalanceCore`` (true work,
    queues, the incoming job's size); round robin's counter is its state, restarted at every episode start."""

    def __init__(self, rule: str, service_rates, seed: int = 0, device="cpu"):
        if rule not in DISPATCH_RULES:
            raise ValueError(f"unknown dispatch rule {rule!r}; choose one of {', '.join(DISPATCH_RULES)}")
        self.rule, self.device = rule, torch.device(device)
        self.rates = torch.tensor(service_rates, dtype=torch.float64, device=self.device)
        self.gen = torch.Generator().manual_seed(int(seed))

    def initial_state(self, batch: int):
        return torch.zeros(batch, dtype=torch.long, device=self.device) if self.rule == "round_robin" else None

    def act(self, obs, state, info):
        if self.rule in ("jsq", "p2c") and info.get("queue") is None:
            raise ValueError(f"dispatch rule {self.rule!r} reads each server's number of jobs, which the observation "
                             "does not hold; pass the env's info (with 'queue')")
        if self.rule == "round_robin":
            state = torch.where(info["episode_start"].to(state.device), 0, state)
        a = dispatch(self.rule, info, self.rates, self.gen, state)
        return a, (state + 1 if self.rule == "round_robin" else state)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "gen" in state:
            self.gen.set_state(state["gen"])


__all__ = ["DISPATCH_RULES", "DispatchRule", "dispatch"]
