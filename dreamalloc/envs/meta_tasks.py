"""Meta-RL sanity tasks as batched torch envs: Bernoulli bandits and random tabular MDPs (Duan et al. 2016).

An RL^2 implementation is validated on these before it meets the allocator: they are small, their task
distributions are known, and RL^2's paper gives reference numbers for them (docs/reference.md §6). They have
``AllocCore``'s face (tensors in and out, SAME_STEP autoreset, ``final_obs`` and ``episode`` in info), so
the agents run on them unchanged.

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

Randomness is counter-based (``workloads.rng``): trial j of a row seeded s (j counted from that seeded
reset) draws its task from a stream keyed by (s, j) and its step noise (Bernoulli outcomes, reward noise,
next states) from a second stream keyed by the same pair. So the same seed and the same actions give the
same trajectory on any device, and row b of a batch seeded s equals a batch of one seeded s + b (the
allocation env's convention). ``reset()`` without a seed moves every row on to its next trial.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch

from dreamalloc.envs.actions import ActionSpec
from dreamalloc.workloads.rng import CounterRNG

TASK_SALT, STEP_SALT = 0x5EED7A5C, 0x57E9  # separate the task draw from the step noise of one (seed, trial)


def _int_at_least(name: str, value, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"invalid {what}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _normals(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Standard normals from uniforms in [0, 1) (Box-Muller; 1 - u1 is in (0, 1], so the log is finite)."""
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)


class _TrialCore(ABC):
    """Trial / episode bookkeeping, seeding, the RL^2 observation and SAME_STEP autoreset for B rows.

    Subclasses draw a task (``_draw_task``), put a row at its episode's start (``_start_episode``), apply
    one batched action (``_transition`` -> float64 rewards) and write their task obs (``_task_obs``)."""

    what = "meta task"

    def __init__(self, num_envs: int, n_actions: int, task_dim: int, horizon: int, episodes: int, device):
        self.B = _int_at_least("num_envs", num_envs, 1, self.what)
        self.device = torch.device(device)
        self.n_actions, self.task_dim = int(n_actions), int(task_dim)
        self.horizon, self.episodes = int(horizon), int(episodes)
        self.obs_dim = self.task_dim + self.n_actions + 2
        dev, B = self.device, self.B
        self.seed = torch.zeros(B, dtype=torch.long, device=dev)
        self.trial = torch.full((B,), -1, dtype=torch.long, device=dev)  # trials since the seeded reset
        self.episode = torch.zeros(B, dtype=torch.long, device=dev)  # episode index inside the trial
        self.t = torch.zeros(B, dtype=torch.long, device=dev)  # steps taken in the episode
        self.ep_return = torch.zeros(B, dtype=torch.float64, device=dev)
        self.trial_return = torch.zeros(B, dtype=torch.float64, device=dev)
        self.prev_action = torch.full((B,), -1, dtype=torch.long, device=dev)  # -1: none (trial start)
        self.prev_reward = torch.zeros(B, dtype=torch.float64, device=dev)
        self.episode_start = torch.ones(B, dtype=torch.bool, device=dev)
        self.trial_start = torch.ones(B, dtype=torch.bool, device=dev)
        self.task_rng = CounterRNG(B, dev)
        self.step_rng = CounterRNG(B, dev)
        self.started = False
        self.action_spec = ActionSpec(self.n_actions, B, dev, "env", f"Discrete({self.n_actions})")

    def trial_length(self) -> int:
        """Steps per trial (every trial has the same length)."""
        return self.horizon * self.episodes

    # ----------------------------------------------------------------------------------------------
    def reset(self, seed=None) -> tuple[torch.Tensor, dict]:
        """Start a new trial in every row. ``seed``: one int (row b gets seed + b) or one per row; it restarts
        the trial count at 0. Without it each row moves on to its next trial (fresh entropy if never seeded)."""
        if seed is not None:
            s = torch.as_tensor(seed, dtype=torch.long, device=self.device).reshape(-1)
            if s.numel() not in (1, self.B):
                raise ValueError(f"seed must be one int or one per env ({self.B}), got {s.numel()} seeds")
            self.seed.copy_(s + torch.arange(self.B, device=self.device) if s.numel() == 1 else s)
            self.trial.zero_()
        else:
            never = (self.trial < 0).nonzero().squeeze(1)
            if never.numel():
                entropy = np.random.SeedSequence().generate_state(never.numel(), np.uint32).astype(np.int64)
                self.seed[never] = torch.as_tensor(entropy, device=self.device)
            self.trial += 1
        self._new_trial(torch.arange(self.B, device=self.device))
        self.started = True
        return self._observe(), self._info()

    def _new_trial(self, rows: torch.Tensor) -> None:
        self.task_rng.reseed(rows, self.seed[rows], self.trial[rows], TASK_SALT)
        self.step_rng.reseed(rows, self.seed[rows], self.trial[rows], STEP_SALT)
        self._draw_task(rows)
        self.episode[rows] = 0
        self.trial_return[rows] = 0.0
        self.prev_action[rows] = -1
        self.prev_reward[rows] = 0.0
        self.trial_start[rows] = True
        self._new_episode(rows)

    def _new_episode(self, rows: torch.Tensor) -> None:
        self.t[rows] = 0
        self.ep_return[rows] = 0.0
        self.episode_start[rows] = True
        self._start_episode(rows)

    # ----------------------------------------------------------------------------------------------
    def check_action(self, action) -> torch.Tensor:
        """The actions as int64 [B]; an ``ActionError`` for a wrong type, dtype, shape or value."""
        return self.action_spec(action)

    def step(self, action):
        """One step of every row: (obs [B, D] float32, reward [B] float64, terminated [B], truncated [B], info)."""
        if not self.started:
            raise RuntimeError("step() called before reset(); call reset(seed=...) first")
        a = self.check_action(action)
        reward = self._transition(a)
        self.t += 1
        self.ep_return += reward
        self.trial_return += reward
        self.prev_action.copy_(a)
        self.prev_reward.copy_(reward)
        self.episode_start.zero_()
        self.trial_start.zero_()
        done = self.t >= self.horizon
        trial_end = done & (self.episode == self.episodes - 1)
        obs = self._observe()
        extra = {}
        if bool(done.any()):  # SAME_STEP autoreset: the finished step's obs goes to final_obs
            extra["episode"] = {"r": self.ep_return.clone(), "l": self.t.clone()}
            extra["_episode"] = done.clone()
            if bool(trial_end.any()):
                extra["trial"] = {"r": self.trial_return.clone(),
                                  "l": self.episode * self.horizon + self.t}
                extra["_trial"] = trial_end.clone()
            d = done.nonzero().squeeze(1)
            inside = (done & ~trial_end).nonzero().squeeze(1)
            ends = trial_end.nonzero().squeeze(1)
            self.episode[inside] += 1
            self._new_episode(inside)
            self.trial[ends] += 1
            self._new_trial(ends)
            extra["final_obs"], obs = obs, obs.clone()
            extra["_final_obs"] = done.clone()
            obs[d] = self._observe(d)
        info = self._info()
        info.update(extra)
        info["trial_end"] = trial_end
        return obs, reward, done, torch.zeros_like(done), info

    # ----------------------------------------------------------------------------------------------
    def _info(self) -> dict:
        return {"trial_start": self.trial_start.clone(), "trial_end": torch.zeros_like(self.trial_start),
                "episode_start": self.episode_start.clone()}

    def _observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n, obs_dim] float32: task obs, previous action one-hot, previous reward, episode-start flag."""
        sel = (lambda x: x) if rows is None else (lambda x: x[rows])
        n = self.B if rows is None else rows.numel()
        out = torch.empty((n, self.obs_dim), dtype=torch.float32, device=self.device)
        D, k = self.task_dim, self.n_actions
        if D:
            out[:, :D] = self._task_obs(rows)
        pa = sel(self.prev_action)
        out[:, D: D + k] = torch.nn.functional.one_hot(pa.clamp(min=0), k).float() * (pa >= 0)[:, None]
        out[:, D + k] = sel(self.prev_reward).float()
        out[:, D + k + 1] = sel(self.episode_start).float()
        return out

    # ----------------------------------------------------------------------------------------------
    _STATE = ("seed", "trial", "episode", "t", "ep_return", "trial_return", "prev_action", "prev_reward",
              "episode_start", "trial_start")
    _TASK: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        """Everything needed to continue these trials exactly (for checkpoints)."""
        state = {k: getattr(self, k).clone() for k in self._STATE + self._TASK}
        state.update(task_rng=self.task_rng.state_dict(), step_rng=self.step_rng.state_dict(),
                     started=self.started)
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE + self._TASK:
            getattr(self, k).copy_(state[k])
        self.task_rng.load_state_dict(state["task_rng"])
        self.step_rng.load_state_dict(state["step_rng"])
        self.started = bool(state["started"])

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


class BanditCore(_TrialCore):
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


class TabularMDPCore(_TrialCore):
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


def split_obs(core: _TrialCore, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(task obs [B, task_dim], previous action one-hot [B, n_actions], previous reward [B], episode-start
    flag [B]) of an RL^2 observation of ``core``."""
    D, k = core.task_dim, core.n_actions
    return obs[:, :D], obs[:, D: D + k], obs[:, D + k], obs[:, D + k + 1]


__all__ = ["BanditCore", "TabularMDPCore", "split_obs"]
