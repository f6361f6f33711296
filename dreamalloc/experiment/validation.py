"""Checks run before any training step (``config.validate`` calls them): a config that passes trains, evaluates
and saves without a config error after the budget is spent.

* ``check_values``: every numeric / closed-set value of every group against the ``RANGES`` table next to its
  dataclass (``dreamalloc/core/checks.py``): ``config error: KEY=VALUE must be ...``;
* ``check_suite_kind``: every task stream of the suite belongs to the env's family (a load-balancing suite
  needs the load-balancing env; the message names the env to use);
* ``check_memory``: the env's footprint (``env_footprint``) is refused above ``max_env_memory_gb`` and
  logged as a warning above ``warn_env_memory_gb``, before anything of that size is allocated;
* ``check_tasks``: every task of the training sets and of every held-out set is built as the run will build
  it (the env config of the task, its stream with one heap: a missing trace file, an unknown stream, a
  parameter of the wrong type all fail here, naming the set and the task).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dreamalloc.core.checks import check_node, ranges_of

log = logging.getLogger("dreamalloc")
GB = 1024**3


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v


def _values(node, cls: type) -> dict[str, Any]:
    """The values of ``node`` that ``cls``'s table checks (only those: others may hold unresolvable strings)."""
    return {k: _plain(node[k]) for k in ranges_of(cls) if k in node}


def task_lists(cfg) -> list[tuple[str, Any]]:
    """(where, task list) of every task list of the suite: suite.train, suite.train_b, suite.heldout.SET."""
    out = [("suite.train", cfg.suite.train)]
    if cfg.suite.get("train_b"):
        out.append(("suite.train_b", cfg.suite.train_b))
    out += [(f"suite.heldout.{name}", tasks) for name, tasks in cfg.suite.heldout.items()]
    return out


def check_values(cfg: DictConfig) -> None:
    from dreamalloc.agents import agent_classes
    from dreamalloc.experiment import config as C

    check_node("", _values(cfg, C.Config), C.Config)
    schema = C.family_of(cfg.env).schema
    check_node("env.", _values(cfg.env, schema), schema)
    check_node("logger.", _values(cfg.logger, C.LoggerConf), C.LoggerConf)
    check_node("eval.", _values(cfg.eval, C.EvalConf), C.EvalConf)
    for where, tasks in task_lists(cfg):
        for i, t in enumerate(tasks):
            check_node(f"{where}.{i}.", _values(t, C.TaskConf), C.TaskConf)
    agents = agent_classes()
    name = cfg.agent.name
    if name not in agents:
        raise ValueError(f"config error: agent.name={name!r} is no agent; choose one of {', '.join(sorted(agents))}")
    check_node("agent.", _values(cfg.agent, agents[name].Config), agents[name].Config)
    if getattr(agents[name], "fixed", False):  # a fixed rule of the env's family, by name
        from dreamalloc.experiment.training import check_fixed_agent

        check_fixed_agent(name, str(cfg.agent.rule), C.family_of(cfg.env))


def check_suite_kind(cfg: DictConfig) -> None:
    """Every task stream of the suite belongs to the env's family (the message names the env to use instead)."""
    from dreamalloc.core.family import FAMILIES
    from dreamalloc.experiment.config import family_of

    fam = family_of(cfg.env)
    streams = sorted({str(t.get("stream")) for _, tasks in task_lists(cfg) for t in tasks})
    others = [f for f in FAMILIES.values() if f is not fam]
    foreign = [s for s in streams if not fam.streams(s) and any(f.streams(s) for f in others)]
    if not foreign:  # (a stream no family knows is check_tasks' to name)
        return
    owners = sorted({f.kind for f in others if any(f.streams(s) for s in foreign)})
    hint = "; ".join(f"the {k} family's (run it with env={'|'.join(FAMILIES[k].env_choices) or k})" for k in owners)
    raise ValueError(f"config error: suite {cfg.suite.name!r} has task streams {', '.join(foreign)} that the "
                     f"env's family ({fam.kind}, env.kind={fam.kind!r}) does not run: they are {hint}")


def env_footprint(cfg: DictConfig) -> tuple[int, str]:
    """(bytes, how they were counted) of the envs a run holds at once: the training env and, during an
    evaluation, the env of one held-out task (``eval.trials`` rows), as the env's family estimates them."""
    from dreamalloc.experiment.config import family_of

    env = cfg.env
    units = int(env.num_envs) + int(cfg.eval.trials)
    who = f"{units:,} envs (env.num_envs={int(env.num_envs)} + eval.trials={int(cfg.eval.trials)})"
    fam = family_of(env)
    if fam.footprint is None:
        return 0, f"{who} (the {fam.kind} family gives no estimate)"
    tasks = [_plain(t) for _, ts in task_lists(cfg) for t in ts]
    need, how = fam.footprint(_plain(env), tasks, units)
    return need, f"{who} x {how}"


def check_memory(cfg: DictConfig) -> None:
    need, how = env_footprint(cfg)
    limit, warn = float(cfg.max_env_memory_gb), float(cfg.warn_env_memory_gb)
    if need > limit * GB:
        raise ValueError(f"config error: the env would need about {need / GB:.1f} GiB ({how}), above "
                         f"max_env_memory_gb={limit:g}: use fewer cells or envs (env.cells, env.num_envs, "
                         "eval.trials), or raise max_env_memory_gb if the machine has the memory")
    if need > warn * GB:
        log.warning(f"the env will need about {need / GB:.1f} GiB ({how}), above warn_env_memory_gb={warn:g}; "
                    "steps get slow at this size")


def check_tasks(cfg: DictConfig) -> None:
    """Build every task as training and evaluation will: a bad task fails now, naming its set."""
    from dreamalloc.core.tasks import expand_tasks
    from dreamalloc.experiment.config import family_of, tasks_of

    fam = family_of(cfg.env)
    env = _plain(cfg.env)
    for where, tasks in task_lists(cfg):
        try:
            expanded = expand_tasks(tasks_of(tasks))
        except ValueError as e:
            raise ValueError(f"config error: {where}: {e}") from None
        for t in expanded:
            try:
                if fam.check_task is not None:
                    fam.check_task(env, t)
                else:
                    fam.env_config(env, [t])
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"config error: {where}: task {t['name']!r}: {e}") from None


__all__ = ["check_memory", "check_suite_kind", "check_tasks", "check_values", "env_footprint", "task_lists"]
