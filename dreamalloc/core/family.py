"""The registry of env families: each domain package registers one ``EnvFamily``, and the experiment layer looks
families up by the env config's ``kind`` instead of testing family names.

A family says how to build its batched core from an env config node and a task list, which fixed policies it has
(the rules an evaluation runs beside every agent, and that ``agent=heuristic`` / ``agent=dispatch`` play), what
bounds a return from above on the same streams, which per-episode metrics its tables report, and (optionally)
a picture of a row's state for timelines, and any evaluation mode of its own (``eval.mode``). A new family is one
package with one ``register_family`` call.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class References:
    """What an evaluation reports beside an agent, on the agent's own streams: the return of every fixed rule
    (``rules[name]`` [trials, k]), the bound no policy can pass ([trials, k]) and per-rule extras
    (e.g. ``{"heuristic_job_time": {rule: mean}}``) that go into the results as they are."""

    rules: dict[str, np.ndarray]
    bound: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvFamily:
    kind: str  # the value of ``env.kind`` that selects this family
    schema: type  # the dataclass of the env config group (its Hydra schema)
    # (env node as a dict, task dicts, num_envs, device, autoreset, trial_episodes or None) -> BatchedCore
    make_core: Callable[..., Any]
    # (env node as a dict, task dicts) -> the family's validated env config (raises ValueError naming the problem)
    env_config: Callable[[dict, list], Any]
    # (core, trials, seed, k, device) -> References on the streams of ``core``'s config
    references: Callable[..., References]
    # (rule name, the family's env config, seed, device) -> a fixed policy: initial_state(B), act(obs, state, info)
    # -> (actions, state), state_dict(), load_state_dict()
    fixed_policy: Callable[..., Any]
    rules: tuple[str, ...]  # the fixed policies' names, in report order
    metrics: tuple[str, ...] = ()  # per-episode metrics (final-info keys) the evaluation reports
    frame: Callable[[Any], Any] | None = None  # (core) -> picture of row 0's state, for timelines
    agent_names: tuple[str, ...] = ()  # the agent config names that play this family's fixed rules
    # (obs [B, D], info dict, env config) -> info with what the fixed policies read, for inference outside an env
    info_from_obs: Callable[..., dict] | None = None
    streams: Callable[[str], bool] = lambda stream: True  # which task streams this family's tasks may name
    env_choices: tuple[str, ...] = ()  # the conf/env options of this family, for messages
    report_columns: tuple[str, ...] = ()  # the metrics shown in results tables (all are in results.json)
    # (env node as a dict, task dict) -> None: build the task as training / evaluation would (ValueError if bad);
    # default: env_config(env, [task])
    check_task: Callable[[dict, dict], None] | None = None
    # (env node as a dict, task dicts, number of envs held at once) -> (bytes, how they were counted)
    footprint: Callable[[dict, list, int], tuple[int, str]] | None = None
    # evaluation modes beside the held-out suite (``eval.mode``, e.g. the allocation family's ``peak``): name ->
    # (env node as a dict, make_policy(core) -> policy(obs, info), mode parameters as a dict, device, method name)
    # -> {"rows": [one dict per (case, method)], "columns": [...], ...anything else for the mode's JSON}
    eval_modes: dict[str, Callable[..., dict]] = field(default_factory=dict)


def env_schema(name: str, config_cls: type, kind: str, exclude: tuple[str, ...] = (), types: dict | None = None,
               ranges: dict | None = None, num_envs: int = 16) -> type:
    """The dataclass of a family's env config group (its Hydra schema), made from the family's own config dataclass
    so that every option and default is written once: ``kind`` and ``num_envs`` first, then each field of
    ``config_cls`` but ``exclude`` (what the suite's tasks give), with ``types`` replacing the annotations Hydra
    cannot hold (a tuple becomes a list). ``ranges`` is its ``RANGES`` table (core.checks)."""
    hints, types = typing.get_type_hints(config_cls), dict(types or {})
    spec: list = [("kind", str, field(default=kind)), ("num_envs", int, field(default=num_envs))]
    for f in dataclasses.fields(config_cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, tuple | list | dict):
            spec.append((f.name, types.get(f.name, hints[f.name]),
                         field(default_factory=lambda d=default: type(d)(d) if isinstance(d, dict) else list(d))))
        else:
            spec.append((f.name, types.get(f.name, hints[f.name]), field(default=default)))
    cls = dataclasses.make_dataclass(name, spec)
    cls.RANGES = dict(ranges or {})
    cls.__doc__ = f"The env group of the {kind} family: ``{config_cls.__name__}``'s options but {', '.join(exclude)}."
    return cls


def core_builder(env_config: Callable[[dict, list], Any], core_cls: type) -> Callable[..., Any]:
    """The usual ``make_core`` of a family: its config from the env node and tasks, K overridden when asked, then
    ``core_cls(num_envs, config, device=..., autoreset=...)``."""

    def make_core(env: dict, tasks: list, num_envs: int, device, autoreset: bool = True,
                  trial_episodes: int | None = None):
        cfg = env_config(env, tasks)
        if trial_episodes is not None:
            cfg.trial_episodes = int(trial_episodes)
        return core_cls(int(num_envs), cfg, device=device, autoreset=autoreset)

    return make_core


def config_from_kwargs(cls: type, base, what: str, kwargs: dict):
    """A family config dataclass from keyword arguments over ``base``; an unknown option is an error listing the
    valid ones (``what`` names the env in the message)."""
    unknown = sorted(set(kwargs) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; valid options: "
                         f"{', '.join(sorted(cls.__dataclass_fields__))}")
    return cls(**{**(base.__dict__ if base is not None else {}), **kwargs})


FAMILIES: dict[str, EnvFamily] = {}


def register_family(family: EnvFamily) -> EnvFamily:
    FAMILIES[family.kind] = family
    return family


def family(kind: str) -> EnvFamily:
    """The family registered under ``kind``; an error listing the registered ones otherwise."""
    if kind not in FAMILIES:
        raise ValueError(f"config error: env.kind={kind!r} is not an env family; choose one of "
                         f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[kind]


__all__ = ["FAMILIES", "EnvFamily", "References", "config_from_kwargs", "core_builder", "env_schema", "family",
           "register_family"]
