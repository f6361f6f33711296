"""mallocGame: the memory-mapping game of mallocMuZero (docs/mallocgame.md), batched on torch: instances and
their checks (``instances.py``; recorded PyTorch programs in ``data/``), the config and task streams
(``config.py``), the dynamics (``env.py``: ``MallocGameDomain`` inside the trials component as
``MallocGameCore``), the gymnasium faces (``gym_env.py``, registered as ``dreamalloc/MallocGame-v0``) and the
reference solvers (``solvers.py``: XLA-style greedy best-fit, first-fit variants, the exact MILP) and the
family registration (``family.py``: ``python train.py experiment=mallocgame agent=...``).

May import: ``dreamalloc.core``. Not the other domains, agents or the experiment layer.
"""

import gymnasium as gym

from dreamalloc.mallocgame import family  # noqa: F401  (registers the env family)
from dreamalloc.mallocgame.config import STREAMS, SYNTHETIC, TRAIN_TASK, MallocGameConfig
from dreamalloc.mallocgame.env import MallocGameCore, MallocGameDomain
from dreamalloc.mallocgame.gym_env import MallocGameEnv, MallocGameVectorEnv
from dreamalloc.mallocgame.instances import Instance, InstanceError, from_json, make_instance, program_set

MALLOC_GAME_ID = "dreamalloc/MallocGame-v0"

if MALLOC_GAME_ID not in gym.registry:
    gym.register(id=MALLOC_GAME_ID, entry_point="dreamalloc.mallocgame.gym_env:MallocGameEnv",
                 vector_entry_point="dreamalloc.mallocgame.gym_env:MallocGameVectorEnv")

__all__ = ["MALLOC_GAME_ID", "STREAMS", "SYNTHETIC", "TRAIN_TASK", "Instance", "InstanceError", "MallocGameConfig",
           "MallocGameCore", "MallocGameDomain", "MallocGameEnv", "MallocGameVectorEnv", "from_json",
           "make_instance", "program_set"]
