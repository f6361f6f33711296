"""Episodes of fixed policies on the batched core: heuristic returns and the capacity bound.

Each heap of a batch plays one episode with its own seed (heap b gets seed + b), so a table over E
episodes is one batched run of E heaps.
"""

from __future__ import annotations

import torch

from dreamalloc.envs.core import AllocConfig, AllocCore


def first_episodes(core: AllocCore, action_fn, seed: int = 0, max_steps: int | None = None) -> dict:
    """Play until every heap has finished its first episode; returns per-heap numpy arrays of the return,
    the length and the final-step metrics of that episode."""
    core.reset(seed=seed)
    B = core.B
    done = torch.zeros(B, dtype=torch.bool, device=core.device)
    out: dict[str, torch.Tensor] = {}
    limit = max_steps or (core.cfg.max_allocs * 4 + 16)
    for _ in range(limit):
        _, _, term, trunc, info = core.step(action_fn(core))
        new = (term | trunc) & ~done
        if new.any():
            final = info.get("final_info", info)
            for k, v in [("return", info["episode"]["r"]), ("length", info["episode"]["l"])] + [
                    (k, v) for k, v in final.items() if isinstance(v, torch.Tensor) and v.ndim == 1]:
                if k not in out:
                    out[k] = torch.zeros(B, dtype=v.dtype, device=v.device)
                out[k][new] = v[new]
            done |= new
        if done.all():
            return {k: v.cpu().numpy() for k, v in out.items()}
    raise RuntimeError(f"{int((~done).sum())} heaps had not finished an episode after {limit} steps")


def heuristic_returns(rule: str, episodes: int, seed: int = 0, device="cpu", **env) -> dict:
    """One episode per heap of a fixed placement rule (any of dreamalloc.heap.RULES)."""
    cfg = AllocConfig(**{**env, "action": "heuristic", "heuristics": (rule,)})
    core = AllocCore(episodes, cfg, device=device)
    zeros = torch.zeros(episodes, dtype=torch.long, device=core.device)
    return first_episodes(core, lambda c: zeros, seed)


def capacity_bound(episodes: int, seed: int = 0, device="cpu", **env) -> dict:
    """Returns of an ideal compacting allocator on the same streams: an episode ends only when the live
    cells plus the request exceed N, so no placement policy whatever can earn more on these seeds."""
    return heuristic_returns("first", episodes, seed, device, **{**env, "ideal": True})
