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

from dreamalloc.core.checks import COUNT, NONNEG, POSITIVE
from dreamalloc.core.family import FAMILIES, EnvFamily, family


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
    RANGES: ClassVar[dict] = {"every": NONNEG, "trials": COUNT, "episodes_per_trial": COUNT, "seed": NONNEG,
                              "select_every": NONNEG, "select_trials": COUNT, "select_seed": NONNEG}
    every: int = 0  # env steps between evaluations during training (0: only at the end)
    trials: int = 16  # trials per held-out task
    episodes_per_trial: int = 3  # K; the recurrent state is kept across the K episodes of a trial
    deterministic: bool = True
    seed: int = 1_000_000_000  # trial t of every task uses stream seed seed + t: the same for every method
    timeline: bool = True  # picture of one heap's occupancy over an episode
    # the fixed rules and the bound beside the agent: cache (computed once per task and reused) | always | off
    baselines: str = "cache"
    # evaluate.py: suite (the held-out sets) or an env family's own mode (alloc: peak, whole traces at their peak)
    mode: str = "suite"
    mode_params: dict[str, Any] = field(default_factory=dict)  # the mode's options (alloc/peak.py: traces, ...)
    # model selection (training.py): every select_every env steps (0: off) the agent acts greedily on
    # select_trials trials of the *training* tasks (stream seeds select_seed + t, disjoint from the evaluation's
    # and training's); the best-scoring weights are kept (checkpoint best_STEP) and the final evaluation scores them
    select_every: int = 0
    select_trials: int = 16
    select_seed: int = 1_500_000_000


@dataclass
class Config:
    RANGES: ClassVar[dict] = {"seed": NONNEG, "steps": COUNT, "checkpoint_every": NONNEG, "keep_checkpoints": NONNEG,
                              "max_env_memory_gb": POSITIVE, "warn_env_memory_gb": POSITIVE}
    env: Any = MISSING  # the schema of the env family that env.kind names (core.family; e.g. alloc, load_balance)
    suite: SuiteConf = MISSING
    agent: Any = MISSING
    logger: LoggerConf = field(default_factory=LoggerConf)
    eval: EvalConf = field(default_factory=EvalConf)
    seed: int = 0
    steps: int = 20_000  # env steps (heap-steps) of training
    device: str = "auto"  # auto | cpu | cuda
    run_name: str | None = None  # default: {agent}_{suite}_s{seed}
    label: str | None = None  # the name comparisons group this run's results by (default: method + overrides)
    run_dir: str = "${hydra:runtime.output_dir}"
    checkpoint_dir: str = "checkpoints"  # a run's checkpoints go to {checkpoint_dir}/{run name} (its own folder)
    checkpoint_every: int = 0  # env steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept (0: keep every checkpoint); the final one is never pruned
    on_nonfinite: str = "stop"  # a NaN / inf loss: stop (saving the last good state) | skip (that update)
    save_replay: Any = None  # checkpoints hold the agent's replay: null (default) = the on-policy rollout in
    # progress yes, the replay buffers of DQN and Dreamer no (a resumed run refills them); true / false: always / never
    resume: Any = False  # false | true (the latest checkpoint of run_name) | PATH (a run or checkpoint dir)
    progress: str = "auto"  # auto (when stderr is a terminal) | on | off
    checkpoint: str | None = None  # evaluate.py: the checkpoint (file or directory) to evaluate
    protocol: str = "standard"  # standard | adaptive (trials, K > 1) | forgetting (train on A, then suite.train_b)
    max_env_memory_gb: float = 8.0  # refuse to start when the envs would need more (validation.env_footprint)
    warn_env_memory_gb: float = 1.0  # warn at start when they need more than this


CHOICES = {"logger.mode": ("offline", "online", "disabled"), "progress": ("auto", "on", "off"),
           "protocol": ("standard", "adaptive", "forgetting"),
           "on_nonfinite": ("stop", "skip"), "save_replay": (None, True, False),
           "eval.baselines": ("cache", "always", "off")}  # env.kind is checked by family_of
DEFAULT_KIND = "alloc"  # an env node without ``kind`` (written before families had names) is an allocation env


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    # Outside the groups themselves (a group's choice list would show them): a group's YAML extends its schema
    # with ``defaults: [/schema/GROUP/NAME@_here_]``.
    for fam in FAMILIES.values():
        cs.store(group="schema/env", name=fam.kind, node=fam.schema)
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
                here.get("kind", DEFAULT_KIND) == node.get("kind", DEFAULT_KIND):  # families have other schemas
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
    schema = family(env.get("kind", DEFAULT_KIND)).schema
    agents = agent_classes()
    if agent.get("name") not in agents:
        raise ValueError(f"agent.name={agent.get('name')!r}; choose one of {', '.join(sorted(agents))}")
    out = OmegaConf.merge(OmegaConf.structured(Config), config)
    out.env = OmegaConf.merge(OmegaConf.structured(schema), env)
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
            names = ("null" if a is None else str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
            raise ValueError(f"config error: {key}={v!r}; choose one of {', '.join(names)}")
    validation.check_values(cfg)
    modes = ("suite", *family_of(cfg.env).eval_modes)
    if cfg.eval.mode not in modes:
        raise ValueError(f"config error: eval.mode={cfg.eval.mode!r}; the {cfg.env.kind} env family offers "
                         f"{', '.join(modes)}")
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
        if int(cfg.eval.select_every):
            raise ValueError("config error: eval.select_every keeps the weights that score best on the training "
                             "tasks, which protocol=forgetting changes half-way; use eval.select_every=0 there")
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


def plain(node) -> dict:
    """A config node (or a dict) as a plain, resolved dict."""
    return OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)


def family_of(env) -> EnvFamily:
    """The env family an env node belongs to (``env.kind``), with an error listing the registered ones."""
    kind = env.get("kind", DEFAULT_KIND) if isinstance(env, dict) else OmegaConf.select(env, "kind",
                                                                                       default=DEFAULT_KIND)
    return family(kind)


def env_config(env, tasks):
    """The family's env config of an env node plus a task list (validated: a bad value is a ValueError)."""
    return family_of(env).env_config(plain(env), tasks_of(tasks))


def make_core(env, tasks, num_envs: int, device, autoreset: bool = True, trial_episodes: int | None = None):
    """The batched core of an env node and a task list (``trial_episodes``: override the env's K)."""
    return family_of(env).make_core(plain(env), tasks_of(tasks), int(num_envs), device, autoreset=autoreset,
                                    trial_episodes=trial_episodes)
