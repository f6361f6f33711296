"""The env contract every family implements: the info keys, ``EnvSpec`` and the two core protocols.

A *domain core* (``DomainCore``) is one family's dynamics for B rows and nothing else: it starts episodes in the
rows it is told to (its randomness keyed by the row's seed and episode number), applies a batch of checked
actions, and observes and describes its current state. It keeps no episode or trial counters, does no
autoreset and knows nothing of RL^2's inputs: ``core.trials.Trials`` wraps any domain core and adds those, the
same way for every family, giving the ``BatchedCore`` that agents, rollouts and the gymnasium faces drive.

Shapes: B rows; observations ``[B, obs_dim]`` float32; actions ``[B]`` int64 (``[B, len(nvec)]`` for
MultiDiscrete); rewards ``[B]`` float64; flags ``[B]`` bool; per-row info values ``[B, ...]`` tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

# Info keys every BatchedCore sets (per row, [B] bool), with what they mean for the *returned* observation.
EPISODE_START = "episode_start"  # the returned obs opens an episode
TRIAL_START = "trial_start"  # the returned obs opens a trial: recurrent agents reset their state here, only here
TRIAL_END = "trial_end"  # this step closed a trial (the step's episode was the trial's last)
ACTION_MASK = "action_mask"  # [B, n_actions] bool: which actions are valid now (only where some are not)
TASK_ID = "task_id"  # [B] int64: the task a row plays (analysis only; agents see it only with task_obs)
SEGMENT = "segment"  # [B] int64: in-episode task switches so far (streams that shift inside an episode; analysis)
# Set where episodes end (SAME_STEP autoreset, gymnasium's convention): the finished step's obs and info, and
# the finished episode's (trial's) return and length, each with a "_KEY" [B] bool mask of the rows it holds.
FINAL_OBS, FINAL_INFO = "final_obs", "final_info"
EPISODE, TRIAL = "episode", "trial"  # {"r": float64 [B], "l": int64 [B]}


@dataclass(frozen=True)
class EnvSpec:
    """What an agent may know of an env: the sizes of its observation and action spaces and how its inputs are
    laid out. Nothing of the domain (a heap size, a service rate) is in it."""

    obs_dim: int  # width of the observation, RL^2 inputs included
    n_actions: int | tuple[int, ...]  # Discrete(n), or a MultiDiscrete nvec
    masked: bool = False  # info carries ACTION_MASK
    meta_obs: bool = False  # the last n_actions + 2 values are previous action (one-hot), reward, episode-start
    trial_episodes: int = 1  # K episodes per trial (recurrent state is kept across them)
    max_episode_steps: int = 0  # an upper bound on the steps of an episode (0: none known)
    action_names: tuple[str, ...] = ()  # the meaning of each action, for messages and tables
    action_space: str | None = None  # the family's name for its action space (e.g. "address"), for checkpoints
    # (offset, width) where the observation describes each action: obs[offset + a * width: offset + (a + 1) *
    # width] are action a's features for every a < n_actions (a pointer-style policy scores actions from them);
    # () where it does not
    action_features: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # family-specific, for reports only


@runtime_checkable
class DomainCore(Protocol):
    """One env family's dynamics over B rows (see the module docstring)."""

    B: int
    device: torch.device
    obs_dim: int  # width of the domain's own observation (without RL^2 inputs or the task one-hot)
    n_actions: int
    n_tasks: int  # tasks the rows draw from (1: none); with several, ``task_id`` [B] is the current one
    action_spec: Any  # core.actions.ActionSpec: checks what step() is handed

    def start(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, trial: torch.Tensor) -> None:
        """Begin a new episode in ``rows`` (int64 [n]): the episode's randomness comes from (seed, episode), a
        task distribution's draw from (seed, trial); ``episode`` counts from the row's last seeding."""

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply checked actions to every row: (reward float64 [B], terminated [B], truncated [B], step facts:
        {key: [B] tensor} that go into this step's info and, where episodes end, its final info)."""

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n, obs_dim] float32 of the rows (all when None)."""

    def info(self) -> dict[str, torch.Tensor]:
        """Per-row facts of the current state (metrics, ``action_mask`` where some actions are invalid)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class BatchedCore(Protocol):
    """What agents and rollouts drive: B rows stepping together, tensors in and out, on one device."""

    B: int
    device: torch.device
    spec: EnvSpec

    def reset(self, seed=None, rows=None) -> tuple[torch.Tensor, dict]: ...

    def step(self, action) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]: ...

    def current(self) -> tuple[torch.Tensor, dict]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


__all__ = ["ACTION_MASK", "EPISODE", "EPISODE_START", "FINAL_INFO", "FINAL_OBS", "SEGMENT", "TASK_ID", "TRIAL",
           "TRIAL_END", "TRIAL_START", "BatchedCore", "DomainCore", "EnvSpec"]
