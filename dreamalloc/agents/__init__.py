"""Agents: one module per method, all behind ``Agent``.

Adding a method means one module here (a subclass of ``Agent`` with a ``name`` and a ``Config`` dataclass,
its hyperparameter schema, with a ``RANGES`` table of its values: dreamalloc/core/checks.py) and one file
conf/agent/NAME.yaml (``defaults: [/schema/agent/NAME@_here_]``): modules of this package are discovered on
first use, so nothing else needs editing.

Agents know no env family: they see an ``EnvSpec`` (observation size, action space, mask, RL^2 layout) and the
flags of each step's info (``trial_start`` resets recurrent state). Fixed rules (placement, dispatch) belong to
their families and reach ``agents.fixed`` as a policy object. May import: core (the spec, config checks), nn,
torch, numpy. Not the domain packages or the experiment layer.
"""

from __future__ import annotations

import importlib
import pkgutil

from dreamalloc.agents.base import Agent
from dreamalloc.agents.fixed import HeuristicAgent

AGENTS: dict[str, type[Agent]] = {}
_discovered = False


def register_agent(cls: type[Agent]) -> type[Agent]:
    AGENTS[cls.name] = cls
    return cls


def agent_classes() -> dict[str, type[Agent]]:
    """Every Agent subclass defined in a module of this package, by name."""
    global _discovered
    if not _discovered:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_") and mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")
        stack = list(Agent.__subclasses__())
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if getattr(cls, "name", None) and cls.__module__.startswith(__name__):
                AGENTS.setdefault(cls.name, cls)
        _discovered = True
    return AGENTS


def make_agent(name: str, obs_dim: int, n_actions: int, env, device, **hparams) -> Agent:
    agents = agent_classes()
    if name not in agents:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(sorted(agents))}")
    return agents[name](obs_dim, n_actions, env, device, **hparams)


__all__ = ["AGENTS", "Agent", "HeuristicAgent", "agent_classes", "make_agent", "register_agent"]
