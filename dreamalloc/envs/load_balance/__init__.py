"""Load balancing (Park's ``load_balance``, docs/reference.md §3) with workload shifts, batched on torch.

``gymnasium.make("dreamalloc/LoadBalance-v0")`` gives Park's default env; ``gymnasium.make_vec(...,
vectorization_mode="vector_entry_point")`` the native batched one; agents drive ``LoadBalanceCore``.
"""

from dreamalloc.envs.load_balance.config import (
    FORK_SIZE_MAX,
    JOB_LAW,
    LOAD_OBS,
    PARK_TASK,
    SIZE_DISTS,
    LoadBalanceConfig,
    park_rates,
)
from dreamalloc.envs.load_balance.core import LoadBalanceCore
from dreamalloc.envs.load_balance.gym_env import LoadBalanceEnv, LoadBalanceVectorEnv

__all__ = ["FORK_SIZE_MAX", "JOB_LAW", "LOAD_OBS", "PARK_TASK", "SIZE_DISTS", "LoadBalanceConfig", "LoadBalanceCore",
           "LoadBalanceEnv", "LoadBalanceVectorEnv", "park_rates"]
