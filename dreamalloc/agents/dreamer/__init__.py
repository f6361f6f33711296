"""DreamerV3 (Nature version): rssm.py, world_model.py, behavior.py (actor-critic), replay.py, agent.py."""

from dreamalloc.agents.dreamer.agent import DreamerAgent, DreamerRL2Agent
from dreamalloc.agents.dreamer.config import DreamerConfig, DreamerRL2Config

__all__ = ["DreamerAgent", "DreamerConfig", "DreamerRL2Agent", "DreamerRL2Config"]
