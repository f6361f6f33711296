"""What a load-balancing env is built from: the servers, the episode, the job law and its shifts.

Defaults are park-project/park's ``load_balance`` as it is (docs/reference.md §3): 10 servers with service rates
0.15, 0.25, ..., 1.05, 1,000 jobs per episode, Pareto(1.5) job sizes with minimum 100 and no cap, exponential
inter-arrival times of mean 55, observations clipped at 5e5, and a server's observed load = the sizes of its
queued jobs (work) plus the remaining *time* of its running job (finish - now), as Park's ``observe()`` has
counted it since commit 7dec7c8 (2019-03-01). Two named options give the other versions:

* ``size_max`` (env level; a task's params may set their own): the job size cap of every job law. 0 (default):
  no cap, park-project/park in its whole history. ``FORK_SIZE_MAX`` = 10,000 = 100 x the Pareto scale: the cap
  of the fork ratnadeepb/park (commit f5a05e9, 2020-08-02), which the earlier tables of docs/results.md used.
  Pareto(1.5) has infinite variance, so the cap matters: it lowers greedy's mean job time from about 965 to
  about 745 (docs/reference.md §3).
* ``load_obs``: ``time`` (default, Park as it is; the fork observes the same) or ``work``: the running job's
  remaining work ((finish - now) x rate), Park before 2019-03, which this replica followed until 2026-12-04.
  The two differ by up to 1 / 0.15 = 6.7x on the slowest server. The dispatch heuristics read the true work
  (``info["work"]``) in both modes, so only learners see the difference.

The earlier learner tables of docs/results.md were measured with ``size_max: 10000, load_obs: work``.

Everything a distribution shift needs is a parameter: the servers (env level, it changes the observation),
and per task the job law, with ``phases`` that change it inside an episode.

A task is ``{name, stream: jobs, params, weight}`` (the allocator's task schema, so ``ranges`` / ``choices``
/ ``samples`` expand task distributions the same way, ``core.tasks.expand_tasks``). Its params:

* ``job_interval``: mean of the exponential inter-arrival time (time units; the draw is truncated to int);
* ``size_dist``: ``pareto`` (minimum ``size_scale``, tail index ``size_shape``: Park's law),
  ``exponential`` (mean ``size_scale``), ``lognormal`` (median ``size_scale``, sigma ``size_shape``) or
  ``constant`` (``size_scale``); sizes are truncated to int, at least 1 and at most ``size_max`` (default:
  the env's ``size_max``; 0: no cap);
* ``phases``: a list of ``{at: JOB_INDEX, ...params}``: from job ``at`` on, those params replace the earlier
  ones (an in-episode shift: e.g. the arrival rate doubles halfway through).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dreamalloc.core.family import config_from_kwargs
from dreamalloc.core.tasks import check_tasks

SIZE_DISTS = ("pareto", "exponential", "lognormal", "constant")
FORK_SIZE_MAX = 10000  # ratnadeepb/park's job_generator clips sizes above 100 x size_scale to it; Park: no cap
LOAD_OBS = ("time", "work")  # a running job counts in its server's observed load by its time left, or work left
REWARD_TIMING = ("interval", "dispatch")  # when a job's time in the system is charged (see LoadBalanceConfig)
JOB_LAW = {"job_interval": 55.0, "size_dist": "pareto", "size_shape": 1.5, "size_scale": 100.0, "size_max": 0}
TASK_PARAMS = (*JOB_LAW, "phases")
PARK_TASK = {"name": "park", "stream": "jobs", "params": {}}


def park_rates(n: int = 10) -> tuple[float, ...]:
    """Park's service rates for n servers: 0.15, 0.25, ... (0.15 + 0.1 (n - 1)), as Python floats."""
    return tuple(round(0.15 + 0.1 * i, 10) for i in range(n))


def _bad(msg: str):
    raise ValueError(f"invalid load-balance env config: {msg}")


def _check_law(law: dict, where: str) -> None:
    iv = law["job_interval"]
    if isinstance(iv, bool) or not isinstance(iv, (int, float)) or not iv >= 0:
        _bad(f"{where}: job_interval must be a number >= 0, got {iv!r}")
    if law["size_dist"] not in SIZE_DISTS:
        _bad(f"{where}: unknown size_dist {law['size_dist']!r}; choose one of {', '.join(SIZE_DISTS)}")
    for key in ("size_shape", "size_scale"):
        v = law[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            _bad(f"{where}: {key} must be a number > 0, got {v!r}")
    _check_size_max(law["size_max"], where)


def _check_size_max(m, where: str) -> None:
    if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)) or not m >= 0:
        _bad(f"{where}: size_max must be a number >= 0 (0: no cap, Park; {FORK_SIZE_MAX}: the fork "
             f"ratnadeepb/park's cap), got {m!r}")


def job_phases(task: dict, num_jobs: int, size_max: float = 0) -> list[tuple[int, dict]]:
    """[(first job index, full job law)] of a concrete task, checked, in job order; ``size_max`` is the cap of
    a law that does not set its own (the env's ``size_max``)."""
    params = dict(task.get("params") or {})
    where = f"task {task.get('name')!r}"
    unknown = sorted(set(params) - set(TASK_PARAMS))
    if unknown:
        _bad(f"{where} has unknown param(s) {unknown}; valid: {', '.join(TASK_PARAMS)}")
    phases = params.pop("phases", None) or []
    law = {**JOB_LAW, "size_max": size_max, **params}
    _check_law(law, where)
    out = [(0, law)]
    if not isinstance(phases, Sequence) or isinstance(phases, str):
        _bad(f"{where}: phases must be a list of {{at, ...params}}, got {phases!r}")
    last = 0
    for p in phases:
        if not isinstance(p, Mapping) or "at" not in p:
            _bad(f"{where}: every phase needs an 'at' job index, got {p!r}")
        p = dict(p)
        at = p.pop("at")
        bad_keys = sorted(set(p) - set(JOB_LAW))
        if bad_keys:
            _bad(f"{where}: phase at {at} has unknown key(s) {bad_keys}; valid: at, {', '.join(JOB_LAW)}")
        if isinstance(at, bool) or not isinstance(at, (int, np.integer)) or not last < at < num_jobs:
            _bad(f"{where}: phase 'at' must be increasing job indices in (0, num_jobs={num_jobs}), got {at!r}")
        last = int(at)
        law = {**out[-1][1], **p}
        _check_law(law, f"{where} phase at {at}")
        out.append((int(at), law))
    return out


@dataclass
class LoadBalanceConfig:
    """Everything a load-balancing env is built from (the keyword arguments of the gymnasium envs)."""

    num_servers: int = 10
    service_rates: tuple | None = None  # None: Park's 0.15, 0.25, ... for num_servers
    num_jobs: int = 1000  # jobs (decisions) per episode; the episode ends when the last one has left
    tasks: list = field(default_factory=lambda: [dict(PARK_TASK)])  # job laws; one drawn per trial
    obs_high: float = 5e5  # Park clips loads and the job size here (before obs_scale)
    obs_scale: float = 1.0  # observations are multiplied by this (Park: 1; learners want ~1e-3)
    reward_scale: float = 1.0  # rewards are multiplied by this (Park: 1)
    trial_episodes: int = 1  # K episodes per meta-RL trial (a trial keeps its task)
    meta_obs: bool = False  # previous action (one-hot), previous reward, episode-start flag (RL^2)
    task_obs: bool = False  # the task id one-hot (an oracle, off for adaptive agents)
    # size cap of every job law that sets none: 0 = none (park-project/park); FORK_SIZE_MAX = 10,000 (ratnadeepb/park)
    size_max: float = 0.0
    # a running job adds to its server's observed load its remaining time (Park now) or work (Park < 2019-03)
    load_obs: str = "time"
    # when the cost is paid: "interval" (Park): minus (elapsed time x jobs in the system) until the next arrival,
    # the last decision paying the whole drain; "dispatch": minus the dispatched job's own time in the system,
    # known at its dispatch (FIFO servers never preempt), so an episode's return is the same number, paid per job
    reward_timing: str = "interval"

    @classmethod
    def from_kwargs(cls, base: LoadBalanceConfig | None = None, **kwargs) -> LoadBalanceConfig:
        return config_from_kwargs(cls, base, "load-balance env", kwargs)

    def validate(self) -> LoadBalanceConfig:
        for name, low in (("num_servers", 1), ("num_jobs", 1), ("trial_episodes", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                _bad(f"{name} must be an integer >= {low}, got {v!r}")
        if self.service_rates is None:
            self.service_rates = park_rates(self.num_servers)
        rates = tuple(self.service_rates)
        if len(rates) != self.num_servers:
            _bad(f"service_rates has {len(rates)} values but num_servers is {self.num_servers}")
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates):
            _bad(f"service_rates must all be numbers > 0, got {list(rates)}")
        self.service_rates = tuple(float(r) for r in rates)
        for name in ("obs_high", "obs_scale", "reward_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                _bad(f"{name} must be a number > 0, got {v!r}")
        _check_size_max(self.size_max, "env")
        if self.load_obs not in LOAD_OBS:
            _bad(f"load_obs must be one of {', '.join(LOAD_OBS)} (time: Park as it is, the running job's remaining "
                 f"time; work: Park before 2019-03, its remaining work), got {self.load_obs!r}")
        if self.reward_timing not in REWARD_TIMING:
            _bad(f"reward_timing must be one of {', '.join(REWARD_TIMING)} (interval: Park's reward, the cost of the "
                 f"time to the next arrival; dispatch: each job's time in the system when it is dispatched), got "
                 f"{self.reward_timing!r}")
        try:
            self.tasks = check_tasks(self.tasks, ("jobs",), "load-balance env", self.task_obs)
        except ValueError as e:
            _bad(str(e))
        for t in self.tasks:
            job_phases(t, self.num_jobs, self.size_max)
        return self

    @property
    def n_actions(self) -> int:
        return self.num_servers

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def meta_dim(self) -> int:
        return (self.n_actions + 2) if self.meta_obs else 0

    @property
    def obs_dim(self) -> int:
        return self.num_servers + 1 + self.meta_dim + (self.n_tasks if self.task_obs else 0)

    def obs_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        hi_load = self.obs_high * self.obs_scale
        lo = [0.0] * (self.num_servers + 1)
        hi = [hi_load] * (self.num_servers + 1)
        if self.meta_obs:
            lo += [0.0] * self.n_actions + [float(np.finfo(np.float32).min), 0.0]
            hi += [1.0] * self.n_actions + [0.0, 1.0]
        if self.task_obs:
            lo += [0.0] * self.n_tasks
            hi += [1.0] * self.n_tasks
        return np.asarray(lo, np.float32), np.asarray(hi, np.float32)


__all__ = ["FORK_SIZE_MAX", "JOB_LAW", "LOAD_OBS", "PARK_TASK", "REWARD_TIMING", "SIZE_DISTS", "LoadBalanceConfig",
           "job_phases", "park_rates"]
