"""Episodes of a policy on the batched core: heuristic returns, the capacity bound, evaluation trials.

Each heap plays ``k`` consecutive episodes of its own stream (heap b: seed + b, episodes 0..k-1), so a
table over E episodes is one batched run of E heaps, and a trial of K episodes is one heap's first K.
"""

from __future__ import annotations

import torch

from dreamalloc.alloc.env import AllocConfig, AllocCore


def run_episodes(core: AllocCore, policy, seed: int = 0, k: int = 1, timeline: bool = False) -> dict:
    """Play until every heap has finished ``k`` episodes. ``policy(obs, info) -> actions [B]``.

    Returns numpy arrays [B, k]: ``return``, ``length`` and every scalar metric at each episode's last
    step; with ``timeline``, also ``timeline`` [T, N]: heap 0's owner map at each step of its first episode.
    """
    obs, info = core.reset(seed=seed)
    B = core.B
    count = torch.zeros(B, dtype=torch.long, device=core.device)  # finished episodes per heap
    out: dict[str, torch.Tensor] = {}
    frames = [core.heaps.owner[0].cpu().clone()] if timeline else None
    limit = (core.cfg.max_allocs * 4 + 16) * k
    for _ in range(limit):
        obs, _, term, trunc, info = core.step(policy(obs, info))
        ended = (term | trunc) & (count < k)
        if frames is not None and count[0] == 0 and not bool(ended[0]):
            frames.append(core.heaps.owner[0].cpu().clone())
        if ended.any():
            final = info.get("final_info", info)
            rows = ended.nonzero().squeeze(1)
            col = count[rows]
            pairs = [("return", info["episode"]["r"]), ("length", info["episode"]["l"])]
            pairs += [(name, v) for name, v in final.items() if isinstance(v, torch.Tensor) and v.ndim == 1]
            for name, v in pairs:
                if name not in out:
                    out[name] = torch.zeros((B, k), dtype=v.dtype, device=v.device)
                out[name][rows, col] = v[rows]
            count[rows] += 1
        if bool((count >= k).all()):
            res = {name: v.cpu().numpy() for name, v in out.items()}
            if frames is not None:
                res["timeline"] = torch.stack(frames).numpy()
            return res
    raise RuntimeError(f"{int((count < k).sum())} heaps had not finished {k} episodes after {limit} steps")


def _constant_policy(core: AllocCore, index: int):
    a = torch.full((core.B,), index, dtype=torch.long, device=core.device)
    return lambda obs, info: a


def heuristic_returns(rule: str, episodes: int, seed: int = 0, device="cpu", k: int = 1, **env) -> dict:
    """``episodes`` heaps (seeds seed..seed+episodes-1) x ``k`` episodes of a fixed placement rule."""
    cfg = AllocConfig(**{**env, "action": "heuristic", "heuristics": (rule,)})
    core = AllocCore(episodes, cfg, device=device)
    res = run_episodes(core, _constant_policy(core, 0), seed, k)
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


__all__ = ["capacity_bound", "env_kwargs", "heuristic_returns", "run_episodes"]
