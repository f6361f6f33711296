"""The contract every env family implements, and the machinery shared by all of them.

``spec``: the info-key constants, ``EnvSpec`` (what an agent may know of an env) and the ``DomainCore`` /
``BatchedCore`` protocols. ``trials``: the one trials component (episode and trial counters, autoreset, the
RL^2 inputs) that turns a domain core into a batched core. ``rollout``: the one loop that plays a policy for k
episodes per row. ``family``: the registry of env families (``EnvFamily``), which the experiment layer looks
up by ``env.kind``. ``gym_faces``: the gymnasium Env / VectorEnv over any core; ``gym_vec``: any gymnasium
vector env as a core; ``sb3``: a core's vector env behind SB3's VecEnv. ``actions``: the one action check;
``checks``: config range checks; ``rng``: the counter-based RNG; ``tasks``: task lists and distributions.

May import: torch, numpy, gymnasium, the standard library (SB3 lazily). Nothing of dreamalloc outside this
package.
"""

from dreamalloc.core.spec import (
    ACTION_MASK,
    EPISODE,
    EPISODE_START,
    FINAL_INFO,
    FINAL_OBS,
    SEGMENT,
    TASK_ID,
    TRIAL,
    TRIAL_END,
    TRIAL_START,
    BatchedCore,
    DomainCore,
    EnvSpec,
)
from dreamalloc.core.trials import Trials

__all__ = ["ACTION_MASK", "EPISODE", "EPISODE_START", "FINAL_INFO", "FINAL_OBS", "SEGMENT", "TASK_ID", "TRIAL",
           "TRIAL_END", "TRIAL_START", "BatchedCore", "DomainCore", "EnvSpec", "Trials"]
