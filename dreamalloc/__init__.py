"""dreamalloc: model-based meta-RL for dynamic memory allocation."""

__version__ = "0.1.0"

import dreamalloc.alloc  # noqa: E402,F401  (each domain registers its gymnasium ids)
import dreamalloc.loadbalance  # noqa: E402,F401
import dreamalloc.mallocgame  # noqa: E402,F401
import dreamalloc.metatasks  # noqa: E402,F401


def __getattr__(name: str):
    """``dreamalloc.load_agent`` (dreamalloc/experiment/inference.py), imported on first use: the harness it
    needs (Hydra configs, the agents) stays out of a plain ``import dreamalloc``."""
    if name in ("load_agent", "LoadedAgent"):
        from dreamalloc.experiment import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'dreamalloc' has no attribute {name!r}")


__all__ = ["LoadedAgent", "__version__", "load_agent"]
