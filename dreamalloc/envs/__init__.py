"""Gymnasium environments over the heap simulator, registered as ``dreamalloc/Alloc-v0``.

``gymnasium.make("dreamalloc/Alloc-v0", cells=256, stream="mixed", action="heuristic")`` gives one heap;
``gymnasium.make_vec("dreamalloc/Alloc-v0", num_envs=1024, vectorization_mode="vector_entry_point")``
gives the native batched env.
"""

import gymnasium as gym

from dreamalloc.envs.alloc import AllocEnv
from dreamalloc.envs.core import ACTION_SPACES, AllocConfig, AllocCore
from dreamalloc.envs.load_balance import LoadBalanceConfig, LoadBalanceCore, LoadBalanceEnv, LoadBalanceVectorEnv
from dreamalloc.envs.meta_tasks import BanditCore, TabularMDPCore
from dreamalloc.envs.vector import AllocVectorEnv

ALLOC_ID = "dreamalloc/Alloc-v0"
LOAD_BALANCE_ID = "dreamalloc/LoadBalance-v0"

if ALLOC_ID not in gym.registry:
    gym.register(id=ALLOC_ID, entry_point="dreamalloc.envs.alloc:AllocEnv",
                 vector_entry_point="dreamalloc.envs.vector:AllocVectorEnv")
if LOAD_BALANCE_ID not in gym.registry:
    gym.register(id=LOAD_BALANCE_ID, entry_point="dreamalloc.envs.load_balance.gym_env:LoadBalanceEnv",
                 vector_entry_point="dreamalloc.envs.load_balance.gym_env:LoadBalanceVectorEnv")

__all__ = ["ACTION_SPACES", "ALLOC_ID", "LOAD_BALANCE_ID", "AllocConfig", "AllocCore", "AllocEnv", "AllocVectorEnv",
           "BanditCore", "LoadBalanceConfig", "LoadBalanceCore", "LoadBalanceEnv", "LoadBalanceVectorEnv",
           "TabularMDPCore"]
