"""The contract every env family implements, and the machinery shared by all of them.

``spec``: the info-key constants, ``EnvSpec`` (what an agent may know of an env) and the ``DomainCore`` /
``BatchedCore`` protocols. ``trials``: the one trials component (episode and trial counters, autoreset, the
RL^2 inputs) that turns a domain core into a batched core. ``actions``: the one action check.

May import: torch, numpy, the standard library. Nothing of dreamalloc outside this package.
"""

from dreamalloc.core.spec import (
    ACTION_MASK,
    EPISODE,
    EPISODE_START,
    FINAL_INFO,
    FINAL_OBS,
    TASK_ID,
    TRIAL,
    TRIAL_END,
    TRIAL_START,
    BatchedCore,
    DomainCore,
    EnvSpec,
)
from dreamalloc.core.trials import Trials

__all__ = ["ACTION_MASK", "EPISODE", "EPISODE_START", "FINAL_INFO", "FINAL_OBS", "TASK_ID", "TRIAL", "TRIAL_END",
           "TRIAL_START", "BatchedCore", "DomainCore", "EnvSpec", "Trials"]
