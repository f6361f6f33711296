"""Load balancing (Park's ``load_balance``, docs/reference.md §3) with workload shifts, batched on torch: job laws
and their config (``config.py``), the dynamics (``env.py``: ``LoadBalanceDomain`` inside the trials component as
``LoadBalanceCore``), the gymnasium faces (``gym_env.py``, registered as ``dreamalloc/LoadBalance-v0``) and the
references an evaluation reports (``references.py``: the dispatch rules, the no-wait bound).

``gymnasium.make("dreamalloc/LoadBalance-v0")`` gives Park's default env; ``gymnasium.make_vec(...,
vectorization_mode="vector_entry_point")`` the native batched one; agents drive ``LoadBalanceCore``.

May import: ``dreamalloc.core``. Not the other domains, agents or the experiment layer.
"""

import gymnasium as gym

from dreamalloc.loadbalance import family  # noqa: F401  (registers the env family)
from dreamalloc.loadbalance.config import (
    FORK_SIZE_MAX,
    JOB_LAW,
    LOAD_OBS,
    PARK_TASK,
    SIZE_DISTS,
    LoadBalanceConfig,
    park_rates,
)
from dreamalloc.loadbalance.env import LoadBalanceCore, LoadBalanceDomain
from dreamalloc.loadbalance.gym_env import LoadBalanceEnv, LoadBalanceVectorEnv

LOAD_BALANCE_ID = "dreamalloc/LoadBalance-v0"

if LOAD_BALANCE_ID not in gym.registry:
    gym.register(id=LOAD_BALANCE_ID, entry_point="dreamalloc.loadbalance.gym_env:LoadBalanceEnv",
                 vector_entry_point="dreamalloc.loadbalance.gym_env:LoadBalanceVectorEnv")

__all__ = ["FORK_SIZE_MAX", "JOB_LAW", "LOAD_BALANCE_ID", "LOAD_OBS", "PARK_TASK", "SIZE_DISTS", "LoadBalanceConfig",
           "LoadBalanceCore", "LoadBalanceDomain", "LoadBalanceEnv", "LoadBalanceVectorEnv", "park_rates"]
