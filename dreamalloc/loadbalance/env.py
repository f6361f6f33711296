"""The batched load-balancing environment on torch tensors: B copies of Park's ``load_balance`` stepping together.

Dynamics (docs/reference.md §3, Park's code): jobs arrive one at a time; the agent sends each to one of S FIFO
servers; a job of size x on a server of rate r runs for int(x / r) time units once the jobs ahead of it are
done. Because servers are FIFO and never preempt, a job's start and finish are fixed the moment it is
dispatched (start = max(arrival, server free), finish = start + duration), so no event queue is needed:
every row keeps its jobs' arrival, size, server, start and finish in [B, J] tensors and a step is a few
tensor ops over them.

* observation: per server its load as Park's ``observe()`` counts it: the sizes of the queued jobs plus, for
  the running one, its time left (``load_obs: time``, Park as it is, the default) or its work left (time left x
  rate, ``load_obs: work``, Park before 2019-03); then the incoming job's size; each clipped at ``obs_high``,
  times ``obs_scale``. ``info["work"]`` is always the true outstanding work (what the dispatch rules read),
  ``info["loads"]`` the observed load (unclipped);
* reward (``reward_timing: interval``, Park's): minus (elapsed time x jobs in the system) from this decision to
  the next arrival, so an episode's return is minus the total time its jobs spent in the system (times
  ``reward_scale``); the last decision's reward covers the drain of every queue. ``reward_timing: dispatch``:
  minus the dispatched job's own time in the system (finish - arrival), fixed at its dispatch; the episode's
  return is the same number, paid job by job instead of interval by interval (no drain lump at the end);
* the episode terminates at the last job's decision; its observation is all zeros (Park's: no incoming job,
  idle servers).

Ties: where a job finishes exactly when the next one arrives, the observation counts it as finished (Park
orders such events by when they were queued). Rewards and dynamics do not depend on that order.

Trials and the RL^2 observation follow ``envs.core.AllocCore``: ``trial_episodes``, ``meta_obs``,
``task_obs``; info carries ``trial_start``, ``trial_end``, ``episode_start``, ``task_id``; SAME_STEP
autoreset with ``final_obs`` / ``final_info`` and ``episode`` = {r, l}. Randomness is counter-based: row b
seeded s draws episode e's jobs from a stream keyed by (s, e), and its task from (s, trial), so a row of a
batch equals a single env with the same seed, on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dreamalloc.core.actions import ActionSpec
from dreamalloc.core.rng import CounterRNG
from dreamalloc.core.trials import Trials
from dreamalloc.loadbalance.config import SIZE_DISTS, LoadBalanceConfig, job_phases

JOB_SALT, TASK_SALT = 0x10AD, 0x7A5C10AD
NEVER = 1 << 62  # "no next arrival": the last decision's interval runs until every queue has drained


class LoadBalanceDomain:
    """The dynamics of B load-balancing envs (a ``core.DomainCore``); ``LoadBalanceCore`` adds episodes, trials
    and the RL^2 inputs."""

    def __init__(self, num_envs: int, cfg: LoadBalanceConfig, device="cpu"):
        self.cfg = cfg
        self.B, self.S, self.J = int(num_envs), cfg.num_servers, cfg.num_jobs
        self.device = dev = torch.device(device)
        self.obs_dim, self.n_actions, self.n_tasks = self.S + 1, self.S, cfg.n_tasks
        self.max_episode_steps = self.J
        self.action_space = "server"  # the action picks a server (recorded in checkpoints' meta)
        B, S, J = self.B, self.S, self.J
        self.rates = torch.tensor(cfg.service_rates, dtype=torch.float64, device=dev)
        self.law = self._law_table()  # [T, J, 5]: interval, dist code, shape, scale, max
        w = torch.tensor([t["weight"] for t in cfg.tasks], dtype=torch.float64)
        self.cdf = (w.cumsum(0) / w.sum()).to(dev)
        i64 = dict(dtype=torch.long, device=dev)
        self.arrival, self.size = torch.zeros(B, J, **i64), torch.zeros(B, J, **i64)
        self.server, self.start_time, self.finish = (torch.zeros(B, J, **i64) for _ in range(3))  # of dispatched jobs
        self.busy = torch.zeros(B, S, **i64)  # when each server has finished its last dispatched job
        self.k = torch.zeros(B, **i64)  # index of the job waiting for a decision
        self.lo = torch.zeros(B, **i64)  # no job before this index is still in the system (a window start)
        self.now = torch.zeros(B, **i64)
        self.task_id = torch.zeros(B, **i64)
        self.ep_time = torch.zeros(B, dtype=torch.float64, device=dev)  # unscaled: total job time so far
        self.ended = torch.ones(B, dtype=torch.bool, device=dev)  # the episode is over: observed as drained
        self._lq = None  # loads() of the state after the last step (observe and info share it)
        self.rng = CounterRNG(B, dev)
        self.action_spec = ActionSpec(self.S, B, dev, "env", f"Discrete({self.S}) (the server)")

    def _law_table(self) -> torch.Tensor:
        rows = []
        for t in self.cfg.tasks:
            table = np.zeros((self.J, 5))
            for at, law in job_phases(t, self.J, self.cfg.size_max):
                table[at:] = [law["job_interval"], SIZE_DISTS.index(law["size_dist"]), law["size_shape"],
                              law["size_scale"], law["size_max"]]
            rows.append(table)
        return torch.tensor(np.stack(rows), dtype=torch.float64, device=self.device)

    # ----------------------------------------------------------------------------------------------
    def start(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, trial: torch.Tensor) -> None:
        """New episodes in ``rows``: the trial's task drawn from (seed, trial), the jobs from (seed, episode)."""
        self._lq = None
        self.rng.reseed(rows, seed, trial, TASK_SALT)
        tid = torch.searchsorted(self.cdf, self.rng.uniform(rows), right=True).clamp(max=len(self.cdf) - 1)
        self.task_id[rows] = tid
        self.rng.reseed(rows, seed, episode, JOB_SALT)
        gap, size = self._draw_jobs(rows, tid)
        self.arrival[rows] = gap.cumsum(1)  # Park: the first job arrives after one inter-arrival time
        self.size[rows] = size
        for t in (self.server, self.start_time, self.finish):
            t[rows] = 0
        self.busy[rows] = 0
        self.k[rows] = 0
        self.lo[rows] = 0
        self.now[rows] = self.arrival[rows, 0]
        self.ep_time[rows] = 0.0
        self.ended[rows] = False

    def _draw_jobs(self, rows: torch.Tensor, tid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inter-arrival times and sizes [n, J] (int64) of the rows' next episode, from their job laws."""
        u = self.rng.uniforms(rows, 3 * self.J).view(-1, self.J, 3)
        law = self.law[tid]  # [n, J, 5]
        interval, dist, shape, scale, cap = law.unbind(-1)
        gap = (-interval * torch.log1p(-u[..., 0])).floor()  # int(Exponential(mean))
        tail = 1.0 - u[..., 1]  # in (0, 1]
        normal = torch.sqrt(-2.0 * torch.log(tail)) * torch.cos(2.0 * math.pi * u[..., 2])
        draws = torch.stack([scale * tail.pow(-1.0 / shape),  # pareto: (Pareto(a) + 1) * scale, Park's law
                             -scale * torch.log(tail),  # exponential
                             scale * torch.exp(shape * normal),  # lognormal
                             scale.expand_as(tail)], -1)  # constant
        size = draws.gather(-1, dist.long()[..., None]).squeeze(-1).clamp(max=1e15).floor()
        size = torch.where(cap > 0, torch.minimum(size, cap.floor()), size).clamp(min=1.0)
        return gap.long(), size.long()

    # ----------------------------------------------------------------------------------------------
    def step(self, a: torch.Tensor):
        """Dispatch each row's waiting job to server ``a``; the reward covers the time to the next arrival."""
        ar = torch.arange(self.B, device=self.device)
        k, t0 = self.k, self.now
        size = self.size[ar, k]
        duration = (size.double() / self.rates[a]).floor().long()  # Park: int(size / rate)
        start = torch.maximum(t0, self.busy[ar, a])
        fin = start + duration
        self.busy[ar, a] = fin
        self.server[ar, k], self.start_time[ar, k], self.finish[ar, k] = a, start, fin
        last = k == self.J - 1
        t1 = torch.where(last, NEVER, self.arrival[ar, (k + 1).clamp(max=self.J - 1)])
        # jobs dispatched so far all arrived by t0; each is in the system over [t0, min(finish, t1)).
        # Only jobs in the window [min lo, max k] can still be in the system (finish is 0 for undispatched ones).
        w, e = int(self.lo.min()), int(k.max()) + 1
        fin_w = self.finish[:, w:e]
        in_system = (torch.minimum(fin_w, t1[:, None]) - t0[:, None]).clamp(min=0).sum(1)
        raw = -in_system.double()
        paid = raw if self.cfg.reward_timing == "interval" else -(fin - t0).double()
        reward = paid * self.cfg.reward_scale
        self.ep_time -= raw
        self.k = torch.where(last, k, k + 1)
        self.now = torch.where(last, self.busy.max(1).values, t1)
        self.ended |= last  # observed as drained until the next episode starts
        self._lq = self.loads()
        return reward, last, torch.zeros_like(last), {}

    def loads(self, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per server, [n, S] each (unclipped): the observed load (float: queued sizes + the running job's time
        left, or work left with ``load_obs: work``), the jobs in the system (int) and the outstanding work
        (float: queued sizes + time left x rate).
        A row whose episode has ended is drained: zeros. Looks only at the window of jobs that can still be
        in the system, and moves the window's start on."""
        lo = self.lo if rows is None else self.lo[rows]
        k_rows = self.k if rows is None else self.k[rows]
        w, e = int(lo.min()), int(k_rows.max()) + 1
        sel = (lambda t: t[:, w:e]) if rows is None else (lambda t: t[rows, w:e])
        now = (self.now if rows is None else self.now[rows])[:, None]
        fin, start = sel(self.finish), sel(self.start_time)
        active = fin > now  # dispatched and not finished (undispatched jobs have finish 0 <= now)
        first = torch.where(active.any(1), active.byte().argmax(1) + w, k_rows)  # none active: all before k left
        if rows is None:
            self.lo = torch.maximum(self.lo, first)
        else:
            self.lo[rows] = torch.maximum(lo, first)
        srv = sel(self.server)
        t_left = (fin - now).double()  # of a running job
        running, queued = (start <= now) & active, (start > now) & active
        queued_size = sel(self.size).double() * queued
        n = srv.shape[0]

        def per_server(x):
            return torch.zeros(n, self.S, dtype=x.dtype, device=self.device).scatter_add_(1, srv, x)

        work = per_server(queued_size + t_left * self.rates[srv] * running)
        load = work if self.cfg.load_obs == "work" else per_server(queued_size + t_left * running)
        queue = per_server(active.long())
        drained = (self.ended if rows is None else self.ended[rows])[:, None]
        return load.masked_fill(drained, 0), queue.masked_fill(drained, 0), work.masked_fill(drained, 0)

    def incoming(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n] size of the job waiting for a decision (0 once the episode has ended)."""
        idx = torch.arange(self.B, device=self.device) if rows is None else rows
        return torch.where(self.ended[idx], 0, self.size[idx, self.k[idx]])

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n, S + 1] float32: each server's load, then the incoming job's size, clipped and scaled."""
        cfg = self.cfg
        lq = self._lq if rows is None and self._lq is not None else self.loads(rows)
        base = torch.cat([lq[0], self.incoming(rows)[:, None]], 1).double().clamp(max=cfg.obs_high)
        return (base * cfg.obs_scale).float()

    def info(self) -> dict:
        load, queue, work = self._lq if self._lq is not None else self.loads()
        jobs = self.k + self.ended.long()  # decisions made this episode
        return {"loads": load, "queue": queue, "work": work, "job_size": self.incoming(), "time": self.now.clone(),
                "mean_job_time": self.ep_time / jobs.clamp(min=1).double(),
                "jobs_in_system": queue.sum(1), "task_id": self.task_id.clone()}

    def action_mask(self) -> None:
        return None  # every server is always a valid choice

    # ----------------------------------------------------------------------------------------------
    _STATE = ("arrival", "size", "server", "start", "finish", "busy", "k", "lo", "now", "task_id", "ep_time")

    def state_dict(self) -> dict:
        """Everything needed to continue these episodes exactly (for checkpoints)."""
        return {**{k: getattr(self, self._attr(k)).clone() for k in self._STATE}, "ended": self.ended.clone(),
                "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            t = getattr(self, self._attr(k))
            t.copy_(state[k] if k in state else torch.zeros_like(t))
        self.ended.copy_(state["ended"] if "ended" in state else state["needs_reset"])  # older: needs_reset
        self.rng.load_state_dict(state["rng"])
        self._lq = None

    @staticmethod
    def _attr(key: str) -> str:
        return "start_time" if key == "start" else key  # ``start`` is the DomainCore method


class LoadBalanceCore(Trials):
    """B load-balancing envs: ``LoadBalanceDomain`` inside the trials component; tensors in, tensors out."""

    def __init__(self, num_envs: int, config: LoadBalanceConfig | None = None, device="cpu",
                 autoreset: bool = True, **overrides):
        cfg = LoadBalanceConfig.from_kwargs(config, **overrides).validate()
        super().__init__(LoadBalanceDomain(num_envs, cfg, device), cfg.trial_episodes, cfg.meta_obs, cfg.task_obs,
                         autoreset, unit="env")


__all__ = ["LoadBalanceCore", "LoadBalanceDomain"]
