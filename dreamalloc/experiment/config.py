"""Structured configs: the schema of every Hydra group, registered in Hydra's ConfigStore.

Because every node is a dataclass, a misspelt key or a wrongly typed value in a YAML file or an override
fails at start with OmegaConf's message naming the key; values with a closed set of choices are checked
in ``validate`` with a message that lists them, and value ranges against the ``RANGES`` table next to each
dataclass (``dreamalloc/core/checks.py``; agents keep theirs next to their ``Config``). The schemas are stored
under ``schema/GROUP/NAME`` (``schema/agent/ppo``, ``schema/env/alloc``, ...), which the YAML files of the
groups extend (``defaults: [/schema/agent/ppo@_here_]``), so Hydra's choice lists show only real options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.checks import COUNT, FINITE, NONNEG, POSITIVE, Range, ge
from dreamalloc.loadbalance import LoadBalanceConfig, LoadBalanceCore


@dataclass
class EnvConf:
    """The allocation env (everything of AllocConfig but the stream, which the suite gives)."""

    RANGES: ClassVar[dict] = {"num_envs": COUNT, "cells": ge(2), "holes": COUNT, "history": NONNEG,
                              "hole_features": NONNEG, "alloc_reward": FINITE, "invalid_reward": FINITE,
                              "max_allocs": COUNT, "trial_episodes": COUNT}
    kind: str = "alloc"  # which env family: alloc | load_balance (LoadBalanceEnvConf)
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


@dataclass
class LoadBalanceEnvConf:
    """The load-balancing env (LoadBalanceConfig but the job laws, which the suite's tasks give)."""

    RANGES: ClassVar[dict] = {"num_envs": COUNT, "num_servers": COUNT, "num_jobs": COUNT,
                              "service_rates": Range(0, lo_open=True, each=True), "obs_high": POSITIVE,
                              "obs_scale": POSITIVE, "reward_scale": POSITIVE, "trial_episodes": COUNT}
    kind: str = "load_balance"
    num_envs: int = 16
    num_servers: int = 10
    service_rates: list[float] | None = None  # None: Park's 0.15, 0.25, ... for num_servers
    num_jobs: int = 1000
    obs_high: float = 5e5
    obs_scale: float = 1.0
    reward_scale: float = 1.0
    trial_episodes: int = 1
    meta_obs: bool = False
    task_obs: bool = False
    size_max: float = 0.0  # job size cap of the laws that set none: 0 = none (Park); 10000 = the fork ratnadeepb/park
    load_obs: str = "time"  # time (Park as it is) | work (Park before 2019-03): the running job in a server's load


@dataclass
class TaskConf:
    """A task (a stream family with parameter values), or with ``ranges`` / ``choices`` a task distribution
    expanded into ``samples`` tasks drawn with ``seed`` (see workloads/tasks.py)."""

    RANGES: ClassVar[dict] = {"weight": POSITIVE, "samples": NONNEG, "seed": NONNEG}
    name: str = MISSING
    stream: str = MISSING
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    ranges: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    seed: int = 0


@dataclass
class SuiteConf:
    """A training task distribution and named held-out evaluation sets."""

    name: str = MISSING
    train: list[TaskConf] = MISSING
    heldout: dict[str, list[TaskConf]] = MISSING
    train_b: list[TaskConf] = field(default_factory=list)  # protocol=forgetting: the second training phase


@dataclass
class LoggerConf:
    RANGES: ClassVar[dict] = {"every": NONNEG}
    mode: str = "offline"  # offline | online | disabled
    project: str = "dreamalloc"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    every: int = 1024  # env steps between training-metric lines


@dataclass
class EvalConf:
    RANGES: ClassVar[dict] = {"every": NONNEG, "trials": COUNT, "episodes_per_trial": COUNT, "seed": NONNEG}
    every: int = 0  # env steps between evaluations during training (0: only at the end)
    trials: int = 16  # trials per held-out task
    episodes_per_trial: int = 3  # K; the recurrent state is kept across the K episodes of a trial
    deterministic: bool = True
    seed: int = 1_000_000_000  # trial t of every task uses stream seed seed + t: the same for every method
    timeline: bool = True  # picture of one heap's occupancy over an episode


@dataclass
class Config:
    RANGES: ClassVar[dict] = {"seed": NONNEG, "steps": COUNT, "checkpoint_every": NONNEG, "keep_checkpoints": NONNEG,
                              "max_env_memory_gb": POSITIVE, "warn_env_memory_gb": POSITIVE}
    env: Any = MISSING  # EnvConf (env=alloc*) or LoadBalanceEnvConf (env=load_balance): the group's schema
    suite: SuiteConf = MISSING
    agent: Any = MISSING
    logger: LoggerConf = field(default_factory=LoggerConf)
    eval: EvalConf = field(default_factory=EvalConf)
    seed: int = 0
    steps: int = 20_000  # env steps (heap-steps) of training
    device: str = "auto"  # auto | cpu | cuda
    run_name: str | None = None  # default: {agent}_{suite}_s{seed}
    run_dir: str = "${hydra:runtime.output_dir}"
    checkpoint_dir: str = "checkpoints"  # a run's checkpoints go to {checkpoint_dir}/{run name} (its own folder)
    checkpoint_every: int = 0  # env steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept (0: keep every checkpoint); the final one is never pruned
    on_nonfinite: str = "stop"  # a NaN / inf loss: stop (saving the last good state) | skip (that update)
    save_replay: bool = True  # include the replay buffer of agents that have one
    resume: Any = False  # false | true (the latest checkpoint of run_name) | PATH (a run or checkpoint dir)
    progress: str = "auto"  # auto (when stderr is a terminal) | on | off
    checkpoint: str | None = None  # evaluate.py: the checkpoint (file or directory) to evaluate
    protocol: str = "standard"  # standard | adaptive (trials, K > 1) | forgetting (train on A, then suite.train_b)
    max_env_memory_gb: float = 8.0  # refuse to start when the envs would need more (validation.env_footprint)
    warn_env_memory_gb: float = 1.0  # warn at start when they need more than this


CHOICES = {"logger.mode": ("offline", "online", "disabled"), "progress": ("auto", "on", "off"),
           "protocol": ("standard", "adaptive", "forgetting"),
           "on_nonfinite": ("stop", "skip")}  # env.kind (absent: alloc) is checked by env_config


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    # Outside the groups themselves (a group's choice list would show them): a group's YAML extends its schema
    # with ``defaults: [/schema/GROUP/NAME@_here_]``.
    cs.store(group="schema/env", name="alloc", node=EnvConf)
    cs.store(group="schema/env", name="load_balance", node=LoadBalanceEnvConf)
    cs.store(group="schema/suite", name="suite", node=SuiteConf)
    from dreamalloc.agents import agent_classes

    for name, cls in agent_classes().items():
        cs.store(group="schema/agent", name=name, node=cls.Config)
    cs.store(group="schema/logger", name="logger", node=LoggerConf)


def with_nodes(cfg: DictConfig, nodes: dict) -> DictConfig:
    """``cfg`` with the given nodes taken from elsewhere (a checkpoint's config). A node of the same name as
    the one composed here is merged onto it (so keys added to a schema since get their defaults); one of
    another name is replaced whole (a ppo checkpoint under the default heuristic agent, another suite)."""
    base = OmegaConf.to_container(cfg, resolve=False)
    for key, node in nodes.items():
        here = cfg.get(key) if key in cfg else None
        if isinstance(node, dict | DictConfig) and isinstance(here, DictConfig) and \
                here.get("name", None) == node.get("name", None) and \
                here.get("kind", "alloc") == node.get("kind", "alloc"):  # env families have other schemas
            node = OmegaConf.merge(here, node)
        base[key] = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    out = OmegaConf.create(base)
    OmegaConf.set_struct(out, True)
    return out


def from_container(config: dict) -> DictConfig:
    """A typed config from a plain (resolved) one, e.g. a checkpoint's: every node is merged onto its schema
    (the env's by ``env.kind``, the agent's by ``agent.name``), so an unknown key or a wrongly typed value
    raises OmegaConf's error naming the key, and keys added to a schema since get their defaults."""
    from dreamalloc.agents import agent_classes

    config = dict(config)
    env, agent, suite = config.pop("env", None), config.pop("agent", None), config.pop("suite", None)
    if not isinstance(env, dict) or not isinstance(agent, dict) or not isinstance(suite, dict):
        raise ValueError("a config needs env, agent and suite sections")
    kinds = {"alloc": EnvConf, "load_balance": LoadBalanceEnvConf}
    kind = env.get("kind", "alloc")
    if kind not in kinds:
        raise ValueError(f"env.kind={kind!r}; choose one of {', '.join(kinds)}")
    agents = agent_classes()
    if agent.get("name") not in agents:
        raise ValueError(f"agent.name={agent.get('name')!r}; choose one of {', '.join(sorted(agents))}")
    out = OmegaConf.merge(OmegaConf.structured(Config), config)
    out.env = OmegaConf.merge(OmegaConf.structured(kinds[kind]), env)
    out.agent = OmegaConf.merge(OmegaConf.structured(agents[agent["name"]].Config), agent)
    out.suite = OmegaConf.merge(OmegaConf.structured(SuiteConf), suite)
    OmegaConf.set_struct(out, True)
    return out


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before training: choices, value ranges of every group, the suite against
    the env, the env's memory footprint, and every training and held-out task built (validation.py)."""
    from dreamalloc.experiment import validation

    for key, allowed in CHOICES.items():
        v = OmegaConf.select(cfg, key)
        if v not in allowed:
            raise ValueError(f"config error: {key}={v!r}; choose one of {', '.join(allowed)}")
    validation.check_values(cfg)
    if not cfg.suite.train:
        raise ValueError(f"config error: suite {cfg.suite.name!r} has no training tasks")
    validation.check_suite_kind(cfg)
    validation.check_memory(cfg)
    env_config(cfg.env, cfg.suite.train)  # the env's own checks (action space, heuristics, job laws, ...)
    validation.check_tasks(cfg)
    if cfg.protocol == "forgetting":
        if not cfg.suite.train_b:
            raise ValueError(f"config error: protocol=forgetting needs suite.train_b (the tasks of phase B); "
                             f"suite {cfg.suite.name!r} has none")
        env_config(cfg.env, cfg.suite.train_b)
    if cfg.protocol == "adaptive" and cfg.eval.episodes_per_trial < 2:
        raise ValueError("config error: protocol=adaptive evaluates per episode of a trial: set "
                         f"eval.episodes_per_trial >= 2, got {cfg.eval.episodes_per_trial}")


def tasks_of(tasks) -> list[dict]:
    """Plain task dicts, without the defaults of the schema's unused fields."""
    out = []
    for t in tasks:
        d = dict(OmegaConf.to_container(t, resolve=True)) if not isinstance(t, dict) else dict(t)
        for key, empty in (("ranges", {}), ("choices", {}), ("samples", 0), ("seed", 0)):
            if key in d and d[key] == empty:
                del d[key]
        out.append(d)
    return out


def alloc_config(env, tasks) -> AllocConfig:
    """The AllocConfig of an env config plus a task list (one task: its stream; several: a TaskStream)."""
    e = OmegaConf.to_container(env, resolve=True) if not isinstance(env, dict) else dict(env)
    e.pop("num_envs", None)
    e.pop("kind", None)
    e["heuristics"] = tuple(e["heuristics"])
    tasks = tasks_of(tasks)
    if len(tasks) == 1 and not tasks[0].get("ranges") and not tasks[0].get("choices"):
        stream, params = tasks[0]["stream"], dict(tasks[0].get("params") or {})
    else:
        stream, params = "tasks", {"tasks": tasks}
    return AllocConfig(stream=stream, stream_params=params, **e).validate()


def env_config(env, tasks) -> AllocConfig | LoadBalanceConfig:
    """The env config of an env node plus a task list, for either env family (``env.kind``)."""
    kind = env.get("kind", "alloc") if isinstance(env, dict) else OmegaConf.select(env, "kind", default="alloc")
    if kind == "alloc":
        return alloc_config(env, tasks)
    if kind != "load_balance":
        raise ValueError(f"config error: env.kind={kind!r}; choose one of alloc, load_balance")
    e = OmegaConf.to_container(env, resolve=True) if not isinstance(env, dict) else dict(env)
    for key in ("num_envs", "kind"):
        e.pop(key, None)
    if e.get("service_rates") is not None:
        e["service_rates"] = tuple(e["service_rates"])
    return LoadBalanceConfig(tasks=tasks_of(tasks), **e).validate()


def make_core(env, tasks, num_envs: int, device, autoreset: bool = True) -> AllocCore | LoadBalanceCore:
    """The batched env core of an env node and a task list."""
    c = env_config(env, tasks)
    cls = LoadBalanceCore if isinstance(c, LoadBalanceConfig) else AllocCore
    return cls(int(num_envs), c, device=device, autoreset=autoreset)
