"""The one act / step / observe cycle that steps any agent on any batched core, and the plain loops built on it.

``Driver(core, agent)`` holds the current observation, info and recurrent state; ``step()`` is one cycle for every
row: the agent acts, the core steps, the agent observes the transition (the pre-reset final observation where an
episode ended). Learning (``agent.update``) is the caller's, so a caller decides what to do around it: the training
loop of ``experiment.training`` adds logging, evaluation and checkpoints; ``drive`` here just trains for a number
of steps; ``evaluate`` plays without learning. The agent is anything with ``initial_state`` / ``act`` /
``observe`` (/ ``update``): nothing here knows an agent class or an env family.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dreamalloc.core.spec import EPISODE, FINAL_OBS


class Driver:
    def __init__(self, core, agent):
        self.core, self.agent = core, agent
        self.obs: torch.Tensor | None = None
        self.info: dict = {}
        self.state = None

    def reset(self, seed=None) -> None:
        """Fresh episodes (``seed``: see the core's ``reset``) and a fresh recurrent state."""
        self.obs, self.info = self.core.reset(seed=seed)
        self.state = self.agent.initial_state(self.core.B)

    def resume(self) -> None:
        """Go on from the core's present state (after loading a checkpoint), with a fresh recurrent state."""
        self.obs, self.info = self.core.current()
        self.state = self.agent.initial_state(self.core.B)

    def step(self, deterministic: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One cycle for every row: (reward, terminated, truncated, info) of the core's step. ``deterministic``
        (acting without learning): act greedily, and show the agent nothing."""
        if deterministic is None:
            action, self.state = self.agent.act(self.obs, self.state, self.info)
        else:
            with torch.no_grad():
                action, self.state = self.agent.act(self.obs, self.state, self.info, deterministic)
        next_obs, reward, term, trunc, info = self.core.step(action)
        if deterministic is None:
            self.agent.observe(self.obs, action, reward, term, trunc, info.get(FINAL_OBS, next_obs), info)
        self.obs, self.info = next_obs, info
        return reward, term, trunc, info


def drive(agent, core, steps: int, seed: int = 0, on_step: Callable | None = None,
          returns_key: str = EPISODE) -> list[float]:
    """Train ``agent`` for ``steps`` env steps on ``core`` (the training loop's cycle and ``agent.update``, without
    its logs and checkpoints); returns the returns of the episodes (``returns_key="trial"``: the trials) finished
    along the way. ``on_step(step, returns)`` runs after every update; returning True stops early."""
    driver = Driver(core, agent)
    driver.reset(seed)
    returns: list[float] = []
    step = 0
    while step < steps:
        _, _, _, info = driver.step()
        step += core.B
        if returns_key in info:
            returns.extend(info[returns_key]["r"][info["_" + returns_key]].tolist())
        agent.update(step)
        if on_step is not None and on_step(step, returns):
            break
    return returns


def evaluate(agent, core, episodes: int, seed: int = 10_000, deterministic: bool = True) -> np.ndarray:
    """Returns of the first ``episodes`` episodes to finish (the agent's state fresh once, at the start)."""
    driver = Driver(core, agent)
    driver.reset(seed)
    out: list[float] = []
    while len(out) < episodes:
        _, _, _, info = driver.step(deterministic)
        if EPISODE in info:
            out.extend(info[EPISODE]["r"][info["_" + EPISODE]].tolist())
    return np.asarray(out[:episodes])


__all__ = ["Driver", "drive", "evaluate"]
