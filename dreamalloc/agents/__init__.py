"""Agents: one module per method, all behind ``Agent``; ``make_agent(name, ...)`` builds one by name."""

from __future__ import annotations

from dreamalloc.agents.base import Agent
from dreamalloc.agents.heuristic import HeuristicAgent

AGENTS: dict[str, type[Agent]] = {"heuristic": HeuristicAgent}


def register_agent(cls: type[Agent]) -> type[Agent]:
    AGENTS[cls.name] = cls
    return cls


def make_agent(name: str, obs_dim: int, n_actions: int, env, device, **hparams) -> Agent:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(sorted(AGENTS))}")
    return AGENTS[name](obs_dim, n_actions, env, device, **hparams)


__all__ = ["AGENTS", "Agent", "HeuristicAgent", "make_agent", "register_agent"]
