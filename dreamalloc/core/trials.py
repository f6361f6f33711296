"""The one trials component: episodes, trials, autoreset and RL^2's inputs around any domain core.

``Trials(domain, trial_episodes=K, meta_obs=..., task_obs=...)`` turns a ``DomainCore`` into a ``BatchedCore``.
It owns, per row: the stream seed and the episode number since the last seeding, the episode's (and trial's)
return and length, the previous action and reward, and the flags of the returned observation.

* A trial is K consecutive episodes of a row (episode numbers eK .. eK + K - 1 after a seeding); the domain
  draws a task distribution's task per trial. Rows run at their own points in their trials.
* Every info holds ``episode_start``, ``trial_start`` (recurrent agents reset there and only there) and
  ``trial_end`` (this step closed a trial), besides the domain's own keys.
* SAME_STEP autoreset (gymnasium's convention): where an episode ends, the returned obs is the next episode's
  first, and ``final_obs`` / ``final_info`` hold the finished step's (each with a ``_KEY`` row mask), with
  ``episode`` = {r, l} (and ``trial`` = {r, l} where the trial ended). With ``autoreset=False`` such rows wait
  for ``reset(rows=...)``.
* ``meta_obs``: the observation ends with the previous action (one-hot), the previous reward and the
  episode-start flag (RL^2); zeros for the action and reward at a trial's start, carried across the episode
  boundaries inside a trial. ``task_obs``: then the task id one-hot (an oracle, for analysis).

Every family gets these semantics from here, so an agent meets the same flags everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from dreamalloc.core.spec import EnvSpec


def reset_rows(seeds: torch.Tensor, episodes: torch.Tensor, rows, seed, unit: str = "env") -> torch.Tensor:
    """The rows to reset (all when ``rows`` is None), with ``seeds`` / ``episodes`` updated in place: a ``seed``
    (one int per row, or one int for row r = seed + r) restarts the episode count at 0; without it each row
    moves on to its next episode (rows never seeded draw fresh OS entropy)."""
    device = seeds.device
    rows = torch.arange(seeds.numel(), device=device) if rows is None else torch.as_tensor(
        rows, dtype=torch.long, device=device)
    if seed is not None:
        s = torch.as_tensor(seed, dtype=torch.long, device=device).reshape(-1)
        if s.numel() not in (1, rows.numel()):
            raise ValueError(f"seed must be one int or one per {unit} ({rows.numel()}), got {s.numel()} seeds")
        seeds[rows] = s + torch.arange(rows.numel(), device=device) if s.numel() == 1 else s
        episodes[rows] = 0
    else:
        never = rows[episodes[rows] < 0]
        if never.numel():
            entropy = np.random.SeedSequence().generate_state(never.numel(), np.uint32).astype(np.int64)
            seeds[never] = torch.as_tensor(entropy, device=device)
        episodes[rows] += 1
    return rows


class Trials:
    """A ``BatchedCore`` over ``domain``: see the module docstring. ``core.domain`` is the wrapped dynamics;
    attributes the wrapper does not have are read from it (``core.heaps``, ``core.cfg``), for analysis and
    tests. Agents and the experiment layer use only ``spec``, ``reset``, ``step``, ``current`` and the info."""

    _STATE = ("seed", "episode", "ep_return", "ep_len", "trial_return", "trial_len", "needs_reset", "prev_action",
              "prev_reward", "episode_start", "trial_start")

    def __init__(self, domain, trial_episodes: int = 1, meta_obs: bool = False, task_obs: bool = False,
                 autoreset: bool = True, unit: str = "env"):
        self.domain = domain
        self.B, self.device = domain.B, domain.device
        self.K, self.meta_obs, self.task_obs = int(trial_episodes), bool(meta_obs), bool(task_obs)
        self.autoreset, self.unit = autoreset, unit
        if self.K < 1:
            raise ValueError(f"trial_episodes must be an integer >= 1, got {trial_episodes!r}")
        if self.task_obs and domain.n_tasks < 2:
            raise ValueError("task_obs needs a task distribution with several tasks")
        B, dev = self.B, self.device
        i64, f64, b = dict(dtype=torch.long, device=dev), dict(dtype=torch.float64, device=dev), dict(
            dtype=torch.bool, device=dev)
        self.seed = torch.zeros(B, **i64)
        self.episode = torch.full((B,), -1, **i64)  # episodes since the row's seeding (-1: never reset)
        # (episode, trial) pairs stacked so that one op per step updates both rows' totals and flags
        self._returns, self._lens = torch.zeros((2, B), **f64), torch.zeros((2, B), **i64)
        self.ep_return, self.trial_return = self._returns.unbind(0)
        self.ep_len, self.trial_len = self._lens.unbind(0)
        self.needs_reset = torch.ones(B, **b)
        self.prev_action = torch.full((B,), -1, **i64)  # -1: none (trial start)
        self.prev_reward = torch.zeros(B, **f64)
        self._starts = torch.ones((2, B), **b)
        self.episode_start, self.trial_start = self._starts.unbind(0)  # the returned obs opens an episode / trial
        n = domain.n_actions
        self.spec = EnvSpec(obs_dim=domain.obs_dim + (n + 2 if self.meta_obs else 0)
                            + (domain.n_tasks if self.task_obs else 0), n_actions=n,
                            masked=bool(getattr(domain, "masked", False)), meta_obs=self.meta_obs,
                            trial_episodes=self.K, max_episode_steps=int(getattr(domain, "max_episode_steps", 0)),
                            action_names=tuple(getattr(domain.action_spec, "names", ())),
                            action_space=getattr(domain, "action_space", None),
                            action_features=tuple(getattr(domain, "action_features", ())))

    @property
    def obs_dim(self) -> int:
        return self.spec.obs_dim

    @property
    def n_actions(self):
        return self.spec.n_actions

    def __getattr__(self, name):  # only called for names the wrapper lacks: the domain's state, for analysis
        if name == "domain":
            raise AttributeError(name)
        return getattr(self.domain, name)

    def __setattr__(self, name, value):  # the domain's attributes are written where they live
        d = self.__dict__.get("domain")
        if d is not None and name not in self.__dict__ and not hasattr(type(self), name) and hasattr(d, name):
            setattr(d, name, value)
        else:
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------------------------------
    def reset(self, seed=None, rows=None) -> tuple[torch.Tensor, dict]:
        """Start new episodes. ``seed`` (one int per row, or one int for row r = seed + r) restarts the episode
        count at 0 (a new trial); without it each row moves on to its next episode."""
        rows = reset_rows(self.seed, self.episode, rows, seed, self.unit)
        self._start(rows)
        return self.observe(), self._info()

    def _start(self, rows: torch.Tensor) -> None:
        episode = self.episode[rows]
        self.domain.start(rows, self.seed[rows], episode, torch.div(episode, self.K, rounding_mode="floor"))
        self.needs_reset[rows] = False
        if self.K == 1:  # every episode opens a trial: reset both totals and set both flags at once
            self._returns[:, rows] = 0.0
            self._lens[:, rows] = 0
            self._starts[:, rows] = True
            first = rows
        else:
            opens = episode % self.K == 0
            self.ep_return[rows] = 0.0
            self.ep_len[rows] = 0
            self.episode_start[rows] = True
            self.trial_start[rows] = opens
            first = rows[opens]
            self.trial_return[first] = 0.0
            self.trial_len[first] = 0
        self.prev_action[first] = -1
        self.prev_reward[first] = 0.0

    def check_action(self, action) -> torch.Tensor:
        """The actions as int64 on the core's device; an ``ActionError`` for anything else (never clipped)."""
        return self.domain.action_spec(action)

    def step(self, action):
        """One step of every row: (obs [B, D] float32, reward [B] float64, terminated [B], truncated [B], info)."""
        if self.needs_reset.any():
            raise self._reset_error()
        a = self.check_action(action)
        reward, terminated, truncated, facts = self.domain.step(a)
        self._returns += reward  # ep_return and trial_return
        self._lens += 1
        self.prev_action.copy_(a)
        self.prev_reward.copy_(reward)
        self._starts.zero_()  # episode_start and trial_start
        done = terminated | truncated
        trial_end = done & (self.episode % self.K == self.K - 1)
        info = self._info(facts)
        obs = self.observe()
        if done.any():
            episode = {"r": self.ep_return.clone(), "l": self.ep_len.clone()}
            trial = {"r": self.trial_return.clone(), "l": self.trial_len.clone()} if trial_end.any() else None
            if self.autoreset:  # SAME_STEP: the finished step's obs / info go under final_*
                final_info = info
                d = done.nonzero().squeeze(1)
                self.episode[d] += 1
                self._start(d)
                final_obs, obs = obs, obs.clone()  # every row: the step's obs (the driver's next obs)
                obs[d] = self.observe(d)
                info = self._info(facts)
                final_info["trial_end"] = trial_end
                info.update(final_obs=final_obs, _final_obs=done.clone(), final_info=final_info,
                            _final_info=done.clone())
            else:
                self.needs_reset |= done
            info["episode"], info["_episode"] = episode, done.clone()
            if trial is not None:
                info["trial"], info["_trial"] = trial, trial_end.clone()
        info["trial_end"] = trial_end
        return obs, reward, terminated, truncated, info

    def _reset_error(self) -> RuntimeError:
        rows = self.needs_reset.nonzero().squeeze(1)
        if bool((self.episode[rows] < 0).all()):
            return RuntimeError("step() called before reset(): call reset(seed=...) first")
        ended = rows[self.episode[rows] >= 0].tolist()
        return RuntimeError(f"step() called on {self.unit}(s) {ended[:8]} whose episode has ended (terminated or "
                            "truncated) and autoreset is off: call reset() first")

    # ----------------------------------------------------------------------------------------------
    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n, spec.obs_dim] float32: the domain's observation, then the RL^2 inputs, then the task one-hot."""
        base = self.domain.observe(rows)
        if not (self.meta_obs or self.task_obs):
            return base
        sel = (lambda t: t) if rows is None else (lambda t: t[rows])
        out = torch.empty((base.shape[0], self.spec.obs_dim), dtype=torch.float32, device=self.device)
        i = base.shape[1]
        out[:, :i] = base
        if self.meta_obs:
            k = self.domain.n_actions
            pa = sel(self.prev_action)
            out[:, i: i + k] = torch.nn.functional.one_hot(pa.clamp(min=0), k).float() * (pa >= 0)[:, None]
            out[:, i + k] = sel(self.prev_reward).float()
            out[:, i + k + 1] = sel(self.episode_start).float()
            i += k + 2
        if self.task_obs:
            out[:, i:] = torch.nn.functional.one_hot(sel(self.domain.task_id), self.domain.n_tasks).float()
        return out

    def _info(self, facts: dict | None = None) -> dict:
        info = self.domain.info()
        info["episode_start"] = self.episode_start.clone()
        info["trial_start"] = self.trial_start.clone()
        info["trial_end"] = torch.zeros_like(self.trial_start)
        if facts:
            info.update(facts)
        return info

    def current(self) -> tuple[torch.Tensor, dict]:
        """The observation and info of the present state (after loading a checkpoint)."""
        return self.observe(), self._info()

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue these episodes and trials exactly (for checkpoints): the domain's state
        and the trial counters, in one flat dict."""
        return {**self.domain.state_dict(), **{k: getattr(self, k).clone() for k in self._STATE}}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("seed", "episode", "needs_reset") if k not in state]
        if missing:
            raise KeyError(f"env state without {missing}: it was not written by a batched core of this dreamalloc")
        for k in self._STATE:
            if k in state:  # the trial totals are absent from states written before they existed: zeros
                getattr(self, k).copy_(state[k])
            elif k in ("trial_return", "trial_len"):
                getattr(self, k).zero_()
        self.domain.load_state_dict(state)


__all__ = ["Trials", "reset_rows"]
