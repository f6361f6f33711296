"""Checks run before any training step (``config.validate`` calls them): a config that passes trains, evaluates
and saves without a config error after the budget is spent.

* ``check_values``: every numeric / closed-set value of every group against the ``RANGES`` table next to its
  dataclass (``dreamalloc/core/checks.py``): ``config error: KEY=VALUE must be ...``;
* ``check_suite_kind``: a load-balancing suite needs the load-balancing env and an allocation suite an
  allocation env (the message names the env to use);
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
# Step temporaries of the allocation env per heap cell beyond its state (the free-run view, masks): measured
# as peak RSS minus state on CPU with 1-4 heaps of 1-4 M cells (62-68 bytes per cell in all, 2026-12).
STEP_BYTES_PER_CELL = 12


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v


def _values(node, cls: type) -> dict[str, Any]:
    """The values of ``node`` that ``cls``'s table checks (only those: others may hold unresolvable strings)."""
    return {k: _plain(node[k]) for k in ranges_of(cls) if k in node}


def _kind(cfg) -> str:
    return OmegaConf.select(cfg, "env.kind", default="alloc")


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
    check_node("env.", _values(cfg.env, C.LoadBalanceEnvConf if _kind(cfg) == "load_balance" else C.EnvConf),
               C.LoadBalanceEnvConf if _kind(cfg) == "load_balance" else C.EnvConf)
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


def check_suite_kind(cfg: DictConfig) -> None:
    """A suite of 'jobs' tasks runs on env=load_balance, any other suite on an allocation env."""
    streams = sorted({str(t.get("stream")) for _, tasks in task_lists(cfg) for t in tasks})
    name = cfg.suite.name
    if _kind(cfg) != "load_balance" and "jobs" in streams:
        raise ValueError(f"config error: suite {name!r} is a load-balancing suite (its tasks are 'jobs' streams) "
                         f"but env.kind={_kind(cfg)!r}: run it with env=load_balance")
    if _kind(cfg) == "load_balance" and set(streams) - {"jobs"}:
        other = ", ".join(s for s in streams if s != "jobs")
        raise ValueError(f"config error: suite {name!r} is an allocation suite (streams {other}) but the env is "
                         "the load-balancing one (env=load_balance): run it with an allocation env (env=alloc256, "
                         "env=alloc64, or another allocation env of conf/env)")


def _stream_cell_bytes(tasks) -> int:
    """Per-heap-cell state of the streams of a task list (a task stream keeps one sub-stream per task)."""
    from dreamalloc.alloc.workloads import ALIASES, STREAMS

    total = 0
    for t in tasks:
        cls = STREAMS.get(ALIASES.get(str(t.get("stream")), str(t.get("stream"))))
        total += int(getattr(cls, "CELL_BYTES", 0) or 0)
        sub = (t.get("params") or {}).get("tasks") if isinstance(t.get("params"), dict | DictConfig) else None
        if sub:
            total += _stream_cell_bytes(sub)
    return total


def heap_bytes_per_cell() -> int:
    """Bytes of the heap state per heap and cell, read off a small ``HeapBatch`` (follows its tensors)."""
    import torch

    from dreamalloc.alloc.heap import HeapBatch

    n = 64
    h = HeapBatch(1, n, "cpu")
    return sum(t.element_size() * t.numel() for t in vars(h).values() if isinstance(t, torch.Tensor)
               and t.numel() == n) // n


def env_footprint(cfg: DictConfig) -> tuple[int, str]:
    """(bytes, how they were counted) of the envs a run holds at once: the training env and, during an
    evaluation, the env of one held-out task (``eval.trials`` heaps or envs)."""
    env = cfg.env
    units = int(env.num_envs) + int(cfg.eval.trials)
    who = f"{units:,} envs (env.num_envs={int(env.num_envs)} + eval.trials={int(cfg.eval.trials)})"
    if _kind(cfg) == "load_balance":
        S, J = int(env.num_servers), int(env.num_jobs)
        per = 5 * 8 * J + 2 * 8 * S + 4 * (S + 1)  # arrival, size, server, start, finish per job; busy; obs
        return units * per, f"{who} x ({J:,} jobs x 40 B + {S} servers x 20 B)"
    N = int(env.cells)
    tasks = [_plain(t) for _, ts in task_lists(cfg) for t in ts]
    per_cell = heap_bytes_per_cell() + 4 * bool(env.bitmap) + STEP_BYTES_PER_CELL + _stream_cell_bytes(tasks)
    return units * N * per_cell, f"{who} x {N:,} cells x {per_cell} B (heap state, observation, step buffers)"


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
    from dreamalloc.alloc.workloads import make_stream
    from dreamalloc.core.tasks import expand_tasks
    from dreamalloc.experiment.config import env_config, tasks_of

    lb = _kind(cfg) == "load_balance"
    for where, tasks in task_lists(cfg):
        try:
            expanded = expand_tasks(tasks_of(tasks))
        except ValueError as e:
            raise ValueError(f"config error: {where}: {e}") from None
        for t in expanded:
            try:
                if lb or where.startswith("suite.heldout"):
                    env_config(cfg.env, [t])  # evaluation builds the env of each held-out task alone
                if not lb:
                    make_stream(t["stream"], 1, int(cfg.env.cells), "cpu", **t["params"])
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"config error: {where}: task {t['name']!r}: {e}") from None


__all__ = ["STEP_BYTES_PER_CELL", "check_memory", "check_suite_kind", "check_tasks", "check_values", "env_footprint",
           "heap_bytes_per_cell", "task_lists"]
