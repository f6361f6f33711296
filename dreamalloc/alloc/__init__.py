"""Dynamic memory allocation: the heap simulator (``heap/``), request streams and traces (``workloads/``), the
allocation env (``env.py``: ``AllocDomain`` inside the trials component as ``AllocCore``), its gymnasium faces
(``gym_env.py``, ``vector.py``, registered as ``dreamalloc/Alloc-v0``) and the references evaluations report beside
an agent (``references.py``: every placement rule, the capacity bound).

``gymnasium.make("dreamalloc/Alloc-v0", cells=256, stream="mixed", action="heuristic")`` gives one heap;
``gymnasium.make_vec("dreamalloc/Alloc-v0", num_envs=1024, vectorization_mode="vector_entry_point")``
gives the native batched env.

May import: ``dreamalloc.core``. Not the other domains, agents or the experiment layer.
"""

import gymnasium as gym

from dreamalloc.alloc import family  # noqa: F401  (registers the env family)
from dreamalloc.alloc.env import ACTION_SPACES, AllocConfig, AllocCore, AllocDomain
from dreamalloc.alloc.gym_env import AllocEnv
from dreamalloc.alloc.vector import AllocVectorEnv

ALLOC_ID = "dreamalloc/Alloc-v0"

if ALLOC_ID not in gym.registry:
    gym.register(id=ALLOC_ID, entry_point="dreamalloc.alloc.gym_env:AllocEnv",
                 vector_entry_point="dreamalloc.alloc.vector:AllocVectorEnv")

__all__ = ["ACTION_SPACES", "ALLOC_ID", "AllocConfig", "AllocCore", "AllocDomain", "AllocEnv", "AllocVectorEnv"]
