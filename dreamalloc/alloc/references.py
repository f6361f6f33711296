"""The references of the allocation family: fixed-rule returns and the capacity bound, on given streams.

Each heap plays ``k`` consecutive episodes of its own stream (heap b: seed + b, episodes 0..k-1), so a
table over E episodes is one batched run of E heaps, and a trial of K episodes is one heap's first K.
"""

from __future__ import annotations

import torch

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.workloads import stream_tasks
from dreamalloc.core.rollout import constant_policy, run_episodes
from dreamalloc.core.spec import TASK_ID


def heuristic_returns(rule: str, episodes: int, seed: int = 0, device="cpu", k: int = 1, **env) -> dict:
    """``episodes`` heaps (seeds seed..seed+episodes-1) x ``k`` episodes of a fixed placement rule."""
    cfg = AllocConfig(**{**env, "action": "heuristic", "heuristics": (rule,)})
    core = AllocCore(episodes, cfg, device=device)
    res = run_episodes(core, constant_policy(core, 0), seed, k)
    if k == 1:
        res = {name: v[:, 0] if v.ndim == 2 else v for name, v in res.items()}
    return res


def capacity_bound(episodes: int, seed: int = 0, device="cpu", k: int = 1, **env) -> dict:
    """Returns of an ideal compacting allocator on the same streams: an episode ends only when the live
    cells plus the request exceed N, so no placement policy whatever can earn more on these seeds."""
    return heuristic_returns("first", episodes, seed, device, k, **{**env, "ideal": True})


def switching_oracle(episodes: int, seed: int = 0, device="cpu", k: int = 1, **env) -> dict | None:
    """The switching oracle on streams that change task inside an episode: told each decision's task (the env's
    ``task_id``, which agents do not see) and, per task, the rule with the highest mean return when that task
    runs alone on the same seeds; it plays that rule. Returns {"rules": [rule per task], "return": [E, k],
    "recovery_sum" / "recovery_count"}, or None when the stream has no in-episode tasks."""
    pure = stream_tasks(env["stream"], env.get("stream_params") or {}, in_episode=True)
    if pure is None:
        return None
    choice = []
    for stream, params in pure:
        mean = {r: float(heuristic_returns(r, episodes, seed, device, 1, **{**env, "stream": stream,
                                                                              "stream_params": params})
                         ["return"].mean()) for r in RULES}
        choice.append(max(RULES, key=mean.get))
    cfg = AllocConfig(**{**env, "action": "heuristic", "heuristics": RULES})
    core = AllocCore(episodes, cfg, device=device)
    table = torch.tensor([RULES.index(c) for c in choice], dtype=torch.long, device=core.device)
    res = run_episodes(core, lambda obs, info: table[info[TASK_ID]], seed, k)
    return {"rules": choice, **res}


def env_kwargs(cfg: AllocConfig) -> dict:
    """The AllocConfig fields that matter to a fixed heuristic replaying the same streams."""
    keep = ("cells", "stream", "stream_params", "align", "alloc_reward", "invalid_reward", "terminal_reward",
            "max_allocs", "trial_episodes", "on_fail", "drop_reward")
    return {name: getattr(cfg, name) for name in keep}


__all__ = ["capacity_bound", "env_kwargs", "heuristic_returns", "switching_oracle"]
