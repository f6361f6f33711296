"""dreamalloc: model-based meta-RL for dynamic memory allocation."""

__version__ = "0.1.0"

import dreamalloc.envs  # noqa: E402,F401  (registers the gymnasium ids)
