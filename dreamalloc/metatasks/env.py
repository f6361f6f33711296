"""Meta-RL sanity tasks as batched torch envs: Bernoulli bandits and random tabular MDPs (Duan et al. 2016).

An RL^2 implementation is validated on these before it meets the allocator: they are small, their task
distributions are known, and RL^2's paper gives reference numbers for them (docs/reference.md §6). They have
the face of every batched core: the task's dynamics (``BanditDomain``, ``TabularMDPDomain``) inside the trials
component of ``dreamalloc.core.trials``, which keeps the counters, flags and RL^2 inputs, so agents run on
them unchanged.

Trials. A trial is ``episodes`` consecutive episodes of one freshly drawn task (a bandit: one episode of
``pulls`` pulls; an MDP: K episodes of ``horizon`` steps). Every info carries ``trial_start`` (the returned
obs opens a trial, after reset too: recurrent agents reset their state there and only there),
``trial_end`` (this step closed a trial) and ``episode_start``. Where trials end, ``info["trial"]`` =
{"r", "l"} (total reward and length of the finished trial) with ``info["_trial"]``, next to the per-episode
``info["episode"]`` / ``info["_episode"]``. Episodes have a fixed length that is part of the task (Duan et
al.'s finite-horizon setting), so an episode's last step is a termination (nothing to bootstrap after it)
and ``truncated`` is always False. An RL^2 learner lets its returns run across episode ends and stops them
at ``trial_end`` only.

Observation, the RL^2 convention shared with the allocation env's ``meta_obs``:
``[task obs | one-hot previous action (n_actions) | previous reward | episode-start flag]``. The task obs is
the one-hot state for MDPs and empty for bandits. At trial start the previous action is all zeros and the
previous reward 0; across episode ends inside a trial they keep the trial's last step; the flag is 1.0 on
the first obs of every episode. ``split_obs`` takes an observation apart.

Randomness is counter-based (``core.rng``): trial j of a row seeded s (j counted from that seeded
reset) draws its task from a stream keyed by (s, j) and its step noise (Bernoulli outcomes, reward noise,
next states) from a second stream keyed by the same pair. So the same seed and the same actions give the
same trajectory on any device, and row b of a batch seeded s equals a batch of one seeded s + b (the
allocation env's convention). ``reset()`` without a seed moves every row on to its next episode (the
next trial after a trial's last episode), as for every core of ``core.trials``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch

from dreamalloc.core.actions import ActionSpec
from dreamalloc.core.rng import CounterRNG
from dreamalloc.core.trials import Trials

TASK_SALT, STEP_SALT = 0x5EED7A5C, 0x57E9  # separate the task draw from the step noise of one (seed, trial)


def _int_at_least(name: str, value, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"invalid {what}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _normals(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Standard normals from uniforms in [0, 1) (Box-Muller; 1 - u1 is in (0, 1], so the log is finite)."""
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)


class _MetaDomain(ABC):
    """The dynamics of B rows of a meta task (a ``core.DomainCore``): a task drawn at each trial's start, episodes
    of ``horizon`` steps. Subclasses draw a task (``_draw_task``), put a row at its episode's start
    (``_start_episode``), apply one batched action (``_transition`` -> float64 rewards) and write their task obs
    (``_task_obs``)."""

    what = "meta task"
    masked = False
    n_tasks = 1

    def __init__(self, num_envs: int, n_actions: int, task_dim: int, horizon: int, episodes: int, device):
        self.B = _int_at_least("num_envs", num_envs, 1, self.what)
        self.device = torch.device(device)
        self.n_actions, self.task_dim = int(n_actions), int(task_dim)
        self.horizon, self.episodes = int(horizon), int(episodes)
        self.obs_dim = self.task_dim
        self.max_episode_steps = self.horizon
        self.t = torch.zeros(self.B, dtype=torch.long, device=self.device)  # steps taken in the episode
        self.task_rng = CounterRNG(self.B, self.device)
        self.step_rng = CounterRNG(self.B, self.device)
        self.action_spec = ActionSpec(self.n_actions, self.B, self.device, "env", f"Discrete({self.n_actions})")

    def start(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, trial: torch.Tensor) -> None:
        """New episodes in ``rows``; where a trial opens, a fresh task and step noise keyed by (seed, trial)."""
        opens = episode % self.episodes == 0
        first = rows[opens]
        if first.numel():
            self.task_rng.reseed(first, seed[opens], trial[opens], TASK_SALT)
            self.step_rng.reseed(first, seed[opens], trial[opens], STEP_SALT)
            self._draw_task(first)
        self.t[rows] = 0
        self._start_episode(rows)

    def step(self, action: torch.Tensor):
        reward = self._transition(action)
        self.t += 1
        done = self.t >= self.horizon
        return reward, done, torch.zeros_like(done), {}

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self._task_obs(rows).float()

    def info(self) -> dict:
        return {}

    _TASK: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        state = {k: getattr(self, k).clone() for k in ("t",) + self._TASK}
        state.update(task_rng=self.task_rng.state_dict(), step_rng=self.step_rng.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in ("t",) + self._TASK:
            getattr(self, k).copy_(state[k])
        self.task_rng.load_state_dict(state["task_rng"])
        self.step_rng.load_state_dict(state["step_rng"])

    # subclass hooks -----------------------------------------------------------------------------
    @abstractmethod
    def _draw_task(self, rows: torch.Tensor) -> None:
        """A subclass hook."""

    @abstractmethod
    def _start_episode(self, rows: torch.Tensor) -> None:
        """A subclass hook."""

    @abstractmethod
    def _transition(self, action: torch.Tensor) -> torch.Tensor:
        """A subclass hook."""

    @abstractmethod
    def _task_obs(self, rows: torch.Tensor | None) -> torch.Tensor:
        """A subclass hook."""


class _MetaCore(Trials):
    """A meta task inside the trials component, with the RL^2 observation always on."""

    def __init__(self, domain: _MetaDomain):
        super().__init__(domain, trial_episodes=domain.episodes, meta_obs=True, unit="env")

    def trial_length(self) -> int:
        """Steps per trial (every trial has the same length)."""
        return self.horizon * self.episodes


class BanditDomain(_MetaDomain):
    """B Bernoulli bandits: each trial is a fresh instance (arm means ~ U[0, 1]) and one episode of ``pulls``
    pulls; the reward is the pulled arm's Bernoulli outcome. ``means`` [B, arms] float64 is the current task
    (for oracles and analysis; agents do not see it)."""

    what = "bandit config"
    _TASK = ("means",)

    def __init__(self, num_envs: int, arms: int = 5, pulls: int = 10, device="cpu"):
        arms = _int_at_least("arms", arms, 2, self.what)
        pulls = _int_at_least("pulls", pulls, 1, self.what)
        super().__init__(num_envs, n_actions=arms, task_dim=0, horizon=pulls, episodes=1, device=device)
        self.arms, self.pulls = arms, pulls
        self.means = torch.zeros((self.B, arms), dtype=torch.float64, device=self.device)

    def _draw_task(self, rows):
        self.means[rows] = self.task_rng.uniforms(rows, self.arms)

    def _start_episode(self, rows):
        return None

    def _transition(self, action):
        u = self.step_rng.uniform(torch.arange(self.B, device=self.device))  # one draw per pull, any arm
        return (u < self.means.gather(1, action[:, None]).squeeze(1)).double()

    def _task_obs(self, rows):
        return torch.empty((self.B if rows is None else rows.numel(), 0), device=self.device)


class TabularMDPDomain(_MetaDomain):
    """B random tabular MDPs (Duan et al. 2016 §4.2): per (s, a) a mean reward mu ~ N(1, 1) and next-state
    probabilities ~ Dirichlet(1, ..., 1); rewards ~ N(mu, 1). Each trial is a fresh MDP and ``episodes``
    episodes of ``horizon`` steps. Every episode starts in state 0, as in RL^2's own code (rllab's
    ``RandomTabularMDPEnv`` and its gym twin both reset to state 0). ``reward_mean`` [B, S, A],
    ``transition`` [B, S, A, S] (float64) and ``state`` [B] are the current task and state (for oracles)."""

    what = "tabular MDP config"
    _TASK = ("reward_mean", "transition", "cdf", "state")

    def __init__(self, num_envs: int, states: int = 10, actions: int = 5, horizon: int = 10, episodes: int = 10,
                 device="cpu"):
        states = _int_at_least("states", states, 1, self.what)
        actions = _int_at_least("actions", actions, 2, self.what)
        horizon = _int_at_least("horizon", horizon, 1, self.what)
        episodes = _int_at_least("episodes", episodes, 1, self.what)
        super().__init__(num_envs, n_actions=actions, task_dim=states, horizon=horizon, episodes=episodes,
                         device=device)
        self.S, self.A = states, actions
        f64 = dict(dtype=torch.float64, device=self.device)
        self.reward_mean = torch.zeros((self.B, states, actions), **f64)
        self.transition = torch.zeros((self.B, states, actions, states), **f64)
        self.cdf = torch.zeros_like(self.transition)  # cumulative transition, for inverse-CDF sampling
        self.state = torch.zeros(self.B, dtype=torch.long, device=self.device)

    def _draw_task(self, rows):
        n, S, A = rows.numel(), self.S, self.A
        sa = S * A
        u = self.task_rng.uniforms(rows, 2 * sa + sa * S)
        self.reward_mean[rows] = (1.0 + _normals(u[:, :sa], u[:, sa: 2 * sa])).view(n, S, A)
        e = -torch.log1p(-u[:, 2 * sa:]).view(n, S, A, S)  # Exp(1); normalised Exp(1)s are Dirichlet(1)
        p = e / e.sum(-1, keepdim=True).clamp(min=1e-300)
        self.transition[rows] = p
        self.cdf[rows] = p.cumsum(-1)

    def _start_episode(self, rows):
        self.state[rows] = 0

    def _transition(self, action):
        b = torch.arange(self.B, device=self.device)
        u = self.step_rng.uniforms(b, 3)
        s = self.state
        reward = self.reward_mean[b, s, action] + _normals(u[:, 0], u[:, 1])
        nxt = torch.searchsorted(self.cdf[b, s, action], u[:, 2:3].contiguous(), right=True).squeeze(1)
        self.state.copy_(nxt.clamp(max=self.S - 1))  # a rounding shortfall of the cdf below u stays in range
        return reward

    def _task_obs(self, rows):
        s = self.state if rows is None else self.state[rows]
        return torch.nn.functional.one_hot(s, self.S).float()


class BanditCore(_MetaCore):
    """B Bernoulli bandits (``BanditDomain``) with the RL^2 observation: trials of one episode of ``pulls`` pulls."""

    def __init__(self, num_envs: int, arms: int = 5, pulls: int = 10, device="cpu"):
        super().__init__(BanditDomain(num_envs, arms, pulls, device))


class TabularMDPCore(_MetaCore):
    """B random tabular MDPs (``TabularMDPDomain``) with the RL^2 observation: trials of ``episodes`` episodes."""

    def __init__(self, num_envs: int, states: int = 10, actions: int = 5, horizon: int = 10, episodes: int = 10,
                 device="cpu"):
        super().__init__(TabularMDPDomain(num_envs, states, actions, horizon, episodes, device))


def split_obs(core: _MetaCore, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(task obs [B, task_dim], previous action one-hot [B, n_actions], previous reward [B], episode-start
    flag [B]) of an RL^2 observation of ``core``."""
    D, k = core.task_dim, core.n_actions
    return obs[:, :D], obs[:, D: D + k], obs[:, D + k], obs[:, D + k + 1]


__all__ = ["BanditCore", "BanditDomain", "TabularMDPCore", "TabularMDPDomain", "split_obs"]
