"""The references of the allocation family: fixed-rule returns and the capacity bound, on given streams.

Each heap plays ``k`` consecutive episodes of its own stream (heap b: seed + b, episodes 0..k-1), so a
table over E episodes is one batched run of E heaps, and a trial of K episodes is one heap's first K.
"""

from __future__ import annotations

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.rollout import constant_policy, run_episodes


def heuristic_returns(rule: str, episodes: int, seed: int = 0, device="cpu", k: int = 1, **env) -> dict:
    """``episodes`` heaps (seeds seed..seed+episodes-1) x ``k`` episodes of a fixed placement rule."""
    cfg = AllocConfig(**{**env, "action": "heuristic", "heuristics": (rule,)})
    core = AllocCore(episodes, cfg, device=device)
    res = run_episodes(core, constant_policy(core, 0), seed, k)
    if k == 1:
        res = {name: v[:, 0] for name, v in res.items()}
    return res


def capacity_bound(episodes: int, seed: int = 0, device="cpu", k: int = 1, **env) -> dict:
    """Returns of an ideal compacting allocator on the same streams: an episode ends only when the live
    cells plus the request exceed N, so no placement policy whatever can earn more on these seeds."""
    return heuristic_returns("first", episodes, seed, device, k, **{**env, "ideal": True})


def env_kwargs(cfg: AllocConfig) -> dict:
    """The AllocConfig fields that matter to a fixed heuristic replaying the same streams."""
    keep = ("cells", "stream", "stream_params", "align", "alloc_reward", "invalid_reward", "terminal_reward",
            "max_allocs", "trial_episodes")
    return {name: getattr(cfg, name) for name in keep}


__all__ = ["capacity_bound", "env_kwargs", "heuristic_returns"]
