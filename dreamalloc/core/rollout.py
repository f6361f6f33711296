"""The one rollout loop: play a policy on any batched core until every row has finished ``k`` episodes.

Row b plays consecutive episodes of stream seed ``seed + b`` (one trial of K episodes when the core's trials
are K long), so E episodes of a table are one batched run, and paired across methods that use the same seeds.
Used by the evaluation protocol for agents, fixed rules and bounds of every family alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dreamalloc.core.spec import EPISODE, FINAL_INFO

Policy = Callable[[torch.Tensor, dict], torch.Tensor]  # (obs [B, D], info) -> actions [B]


def run_episodes(core, policy: Policy, seed: int = 0, k: int = 1, max_steps: int | None = None,
                 frame: Callable | None = None) -> dict[str, np.ndarray]:
    """Play until every row has finished ``k`` episodes.

    Returns numpy arrays [B, k]: ``return``, ``length`` and every per-row scalar of the info at each episode's
    last step (its final info: a family's metrics); with ``frame(core) -> array``, also ``timeline`` [T, ...]:
    ``frame`` of the core at each step of row 0's first episode. ``max_steps`` bounds the loop (default: the
    spec's ``max_episode_steps`` x k + 1, when the spec gives one) and is an error when reached.
    """
    obs, info = core.reset(seed=seed)
    B = core.B
    if max_steps is None and core.spec.max_episode_steps:
        max_steps = core.spec.max_episode_steps * k + 1
    count = torch.zeros(B, dtype=torch.long, device=core.device)  # finished episodes per row
    out: dict[str, torch.Tensor] = {}
    frames = [frame(core)] if frame is not None else None
    steps = 0
    while not bool((count >= k).all()):
        if max_steps is not None and steps >= max_steps:
            raise RuntimeError(f"{int((count < k).sum())} rows had not finished {k} episodes after {steps} steps")
        obs, _, term, trunc, info = core.step(policy(obs, info))
        steps += 1
        ended = (term | trunc) & (count < k)
        if frames is not None and count[0] == 0 and not bool(ended[0]):
            frames.append(frame(core))
        if ended.any():
            final = info.get(FINAL_INFO, info)
            rows = ended.nonzero().squeeze(1)
            col = count[rows]
            pairs = [("return", info[EPISODE]["r"]), ("length", info[EPISODE]["l"])]
            pairs += [(name, v) for name, v in final.items() if isinstance(v, torch.Tensor) and v.ndim == 1]
            for name, v in pairs:
                if name not in out:
                    out[name] = torch.zeros((B, k), dtype=v.dtype, device=v.device)
                out[name][rows, col] = v[rows]
            count[rows] += 1
    res = {name: v.cpu().numpy() for name, v in out.items()}
    if frames is not None:
        res["timeline"] = np.stack([np.asarray(f) for f in frames])
    return res


def constant_policy(core, action: int) -> Policy:
    """The same action in every row at every step."""
    a = torch.full((core.B,), int(action), dtype=torch.long, device=core.device)
    return lambda obs, info: a


__all__ = ["Policy", "constant_policy", "run_episodes"]
