"""DreamerV3 (Nature version): rssm.py, world_model.py, behavior.py (actor-critic), replay.py, agent.py."""

from dreamalloc.agents.dreamer.agent import DreamerAgent
from dreamalloc.agents.dreamer.config import DreamerConfig

__all__ = ["DreamerAgent", "DreamerConfig"]
