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
* reward: minus (elapsed time x jobs in the system) from this decision to the next arrival, so an episode's
  return is minus the total time its jobs spent in the system (times ``reward_scale``);
* the episode terminates at the last job's decision; that step's reward covers the drain of every queue,
  and its observation is all zeros (Park's: no incoming job, idle servers).

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

from dreamalloc.envs.actions import ActionSpec
from dreamalloc.envs.episodes import reset_rows
from dreamalloc.envs.load_balance.config import SIZE_DISTS, LoadBalanceConfig, job_phases
from dreamalloc.workloads.rng import CounterRNG

JOB_SALT, TASK_SALT = 0x10AD, 0x7A5C10AD
NEVER = 1 << 62  # "no next arrival": the last decision's interval runs until every queue has drained


class LoadBalanceCore:
    """B load-balancing envs; tensors in, tensors out (the face of ``AllocCore``)."""

    def __init__(self, num_envs: int, config: LoadBalanceConfig | None = None, device="cpu",
                 autoreset: bool = True, **overrides):
        self.cfg = LoadBalanceConfig.from_kwargs(config, **overrides).validate()
        cfg = self.cfg
        self.B, self.S, self.J = int(num_envs), cfg.num_servers, cfg.num_jobs
        self.device = dev = torch.device(device)
        self.autoreset = autoreset
        B, S, J = self.B, self.S, self.J
        self.rates = torch.tensor(cfg.service_rates, dtype=torch.float64, device=dev)
        self.law = self._law_table()  # [T, J, 5]: interval, dist code, shape, scale, max
        w = torch.tensor([t["weight"] for t in cfg.tasks], dtype=torch.float64)
        self.cdf = (w.cumsum(0) / w.sum()).to(dev)
        i64 = dict(dtype=torch.long, device=dev)
        self.arrival, self.size = torch.zeros(B, J, **i64), torch.zeros(B, J, **i64)
        self.server, self.start, self.finish = (torch.zeros(B, J, **i64) for _ in range(3))  # of dispatched jobs
        self.busy = torch.zeros(B, S, **i64)  # when each server has finished its last dispatched job
        self.k = torch.zeros(B, **i64)  # index of the job waiting for a decision
        self.lo = torch.zeros(B, **i64)  # no job before this index is still in the system (a window start)
        self.now = torch.zeros(B, **i64)
        self.task_id = torch.zeros(B, **i64)
        self.seed = torch.zeros(B, **i64)
        self.episode = torch.full((B,), -1, **i64)
        self.ep_return = torch.zeros(B, dtype=torch.float64, device=dev)
        self.ep_time = torch.zeros(B, dtype=torch.float64, device=dev)  # unscaled: total job time so far
        self.ep_len = torch.zeros(B, **i64)
        self.needs_reset = torch.ones(B, dtype=torch.bool, device=dev)
        self.prev_action = torch.full((B,), -1, **i64)
        self.prev_reward = torch.zeros(B, dtype=torch.float64, device=dev)
        self.episode_start = torch.ones(B, dtype=torch.bool, device=dev)
        self.trial_start = torch.ones(B, dtype=torch.bool, device=dev)
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
    def reset(self, seed=None, rows=None) -> tuple[torch.Tensor, dict]:
        """Start new episodes. ``seed`` (one int per row, or one int for row r = seed + r) restarts the
        episode count at 0; without it each row moves on to its next episode."""
        rows = reset_rows(self.seed, self.episode, rows, seed, "env")
        self._new_episode(rows)
        lq = self.loads()
        return self._observe(lq=lq), self._info(lq)

    def _new_episode(self, rows: torch.Tensor) -> None:
        K = self.cfg.trial_episodes
        trial = torch.div(self.episode[rows], K, rounding_mode="floor")
        self.rng.reseed(rows, self.seed[rows], trial, TASK_SALT)
        tid = torch.searchsorted(self.cdf, self.rng.uniform(rows), right=True).clamp(max=len(self.cdf) - 1)
        self.task_id[rows] = tid
        self.rng.reseed(rows, self.seed[rows], self.episode[rows], JOB_SALT)
        gap, size = self._draw_jobs(rows, tid)
        self.arrival[rows] = gap.cumsum(1)  # Park: the first job arrives after one inter-arrival time
        self.size[rows] = size
        for t in (self.server, self.start, self.finish):
            t[rows] = 0
        self.busy[rows] = 0
        self.k[rows] = 0
        self.lo[rows] = 0
        self.now[rows] = self.arrival[rows, 0]
        self.ep_return[rows] = 0.0
        self.ep_time[rows] = 0.0
        self.ep_len[rows] = 0
        self.needs_reset[rows] = False
        self.episode_start[rows] = True
        first = self.episode[rows] % K == 0
        self.trial_start[rows] = first
        opens = rows[first]
        self.prev_action[opens] = -1
        self.prev_reward[opens] = 0.0

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
    def check_action(self, action) -> torch.Tensor:
        """The actions as int64 [B]; an ``ActionError`` for a wrong type, dtype, shape or server index."""
        return self.action_spec(action)

    def step(self, action):
        if self.needs_reset.any():
            if bool((self.episode < 0).all()):
                raise RuntimeError("step() called before reset(): call reset(seed=...) first")
            raise RuntimeError("step() called on an env whose episode has ended and autoreset is off: call reset()")
        a = self.check_action(action)
        ar = torch.arange(self.B, device=self.device)
        k, t0 = self.k, self.now
        size = self.size[ar, k]
        duration = (size.double() / self.rates[a]).floor().long()  # Park: int(size / rate)
        start = torch.maximum(t0, self.busy[ar, a])
        fin = start + duration
        self.busy[ar, a] = fin
        self.server[ar, k], self.start[ar, k], self.finish[ar, k] = a, start, fin
        last = k == self.J - 1
        t1 = torch.where(last, NEVER, self.arrival[ar, (k + 1).clamp(max=self.J - 1)])
        # jobs dispatched so far all arrived by t0; each is in the system over [t0, min(finish, t1)).
        # Only jobs in the window [min lo, max k] can still be in the system (finish is 0 for undispatched ones).
        w, e = int(self.lo.min()), int(k.max()) + 1
        fin_w = self.finish[:, w:e]
        in_system = (torch.minimum(fin_w, t1[:, None]) - t0[:, None]).clamp(min=0).sum(1)
        raw = -in_system.double()
        reward = raw * self.cfg.reward_scale
        self.ep_time -= raw
        self.ep_return += reward
        self.ep_len += 1
        self.k = torch.where(last, k, k + 1)
        self.now = torch.where(last, self.busy.max(1).values, t1)
        self.prev_action.copy_(a)
        self.prev_reward.copy_(reward)
        self.episode_start.zero_()
        self.trial_start.zero_()
        terminated = last
        truncated = torch.zeros_like(last)
        trial_end = last & (self.episode % self.cfg.trial_episodes == self.cfg.trial_episodes - 1)
        done_now = last.clone()
        self.needs_reset |= done_now  # _observe shows a finished row as drained
        lq = self.loads()
        info = self._info(lq)
        obs = self._observe(lq=lq)
        if done_now.any():
            episode = {"r": self.ep_return.clone(), "l": self.ep_len.clone()}
            if self.autoreset:
                final_info = info
                d = done_now.nonzero().squeeze(1)
                self.episode[d] += 1
                self._new_episode(d)
                final_obs, obs = obs, obs.clone()
                obs[d] = self._observe(d)
                info = self._info()
                final_info["trial_end"] = trial_end
                info.update(final_obs=final_obs, _final_obs=done_now.clone(), final_info=final_info,
                            _final_info=done_now.clone())
            info["episode"], info["_episode"] = episode, done_now.clone()
        info["trial_end"] = trial_end
        return obs, reward, terminated, truncated, info

    # ----------------------------------------------------------------------------------------------
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
        fin, start = sel(self.finish), sel(self.start)
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
        drained = (self.needs_reset if rows is None else self.needs_reset[rows])[:, None]
        return load.masked_fill(drained, 0), queue.masked_fill(drained, 0), work.masked_fill(drained, 0)

    def incoming(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n] size of the job waiting for a decision (0 once the episode has ended)."""
        idx = torch.arange(self.B, device=self.device) if rows is None else rows
        return torch.where(self.needs_reset[idx], 0, self.size[idx, self.k[idx]])

    def _observe(self, rows: torch.Tensor | None = None, lq=None) -> torch.Tensor:
        cfg = self.cfg
        sel = (lambda t: t) if rows is None else (lambda t: t[rows])
        load = (self.loads(rows) if lq is None else lq)[0]
        base = torch.cat([load, self.incoming(rows)[:, None]], 1).double().clamp(max=cfg.obs_high)
        parts = [(base * cfg.obs_scale).float()]
        if cfg.meta_obs:
            pa = sel(self.prev_action)
            parts += [torch.nn.functional.one_hot(pa.clamp(min=0), self.S).float() * (pa >= 0)[:, None],
                      sel(self.prev_reward).float()[:, None], sel(self.episode_start).float()[:, None]]
        if cfg.task_obs:
            parts.append(torch.nn.functional.one_hot(sel(self.task_id), cfg.n_tasks).float())
        return torch.cat(parts, 1)

    def _info(self, lq=None) -> dict:
        load, queue, work = self.loads() if lq is None else lq
        jobs = self.k + self.needs_reset.long()  # decisions made this episode
        return {"loads": load, "queue": queue, "work": work, "job_size": self.incoming(), "time": self.now.clone(),
                "mean_job_time": self.ep_time / jobs.clamp(min=1).double(),
                "jobs_in_system": queue.sum(1), "task_id": self.task_id.clone(),
                "episode_start": self.episode_start.clone(), "trial_start": self.trial_start.clone(),
                "trial_end": torch.zeros_like(self.trial_start)}

    def current(self) -> tuple[torch.Tensor, dict]:
        """The observation and info of the present state (after loading a checkpoint)."""
        return self._observe(), self._info()

    def action_mask(self) -> None:
        return None  # every server is always a valid choice

    # ----------------------------------------------------------------------------------------------
    _STATE = ("arrival", "size", "server", "start", "finish", "busy", "k", "lo", "now", "task_id", "seed", "episode",
              "ep_return", "ep_time", "ep_len", "needs_reset", "prev_action", "prev_reward", "episode_start",
              "trial_start")

    def state_dict(self) -> dict:
        """Everything needed to continue these episodes exactly (for checkpoints)."""
        return {**{k: getattr(self, k).clone() for k in self._STATE}, "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            getattr(self, k).copy_(state[k] if k in state else torch.zeros_like(getattr(self, k)))
        self.rng.load_state_dict(state["rng"])


__all__ = ["LoadBalanceCore"]
