"""The one rollout loop: play a policy on any batched core until every row has finished ``k`` episodes.

Row b plays consecutive episodes of stream seed ``seed + b`` (one trial of K episodes when the core's trials
are K long), so E episodes of a table are one batched run, and paired across methods that use the same seeds.
Used by the evaluation protocol for agents, fixed rules and bounds of every family alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dreamalloc.core.spec import EPISODE, FINAL_INFO, SEGMENT

Policy = Callable[[torch.Tensor, dict], torch.Tensor]  # (obs [B, D], info) -> actions [B]
RECOVERY_STEPS = 128  # bins of the recovery curve: steps since an in-episode switch (the last bin holds the rest)


def run_episodes(core, policy: Policy, seed: int = 0, k: int = 1, max_steps: int | None = None,
                 frame: Callable | None = None) -> dict[str, np.ndarray]:
    """Play until every row has finished ``k`` episodes.

    Returns numpy arrays [B, k]: ``return``, ``length`` and every per-row scalar of the info at each episode's
    last step (its final info: a family's metrics); with ``frame(core) -> array``, also ``timeline`` [T, ...]:
    ``frame`` of the core at each step of row 0's first episode. Where the info reports ``segment`` (a stream
    that switches task inside an episode), also ``recovery_sum`` / ``recovery_count`` [RECOVERY_STEPS]: the
    reward summed and counted by the number of steps since the switch that opened the decision's segment
    (decisions of the first segment, before any switch, are left out): how fast a policy recovers. ``max_steps``
    bounds the loop (default: the spec's ``max_episode_steps`` x k + 1, when the spec gives one) and is an error
    when reached.
    """
    obs, info = core.reset(seed=seed)
    B = core.B
    if max_steps is None and core.spec.max_episode_steps:
        max_steps = core.spec.max_episode_steps * k + 1
    count = torch.zeros(B, dtype=torch.long, device=core.device)  # finished episodes per row
    out: dict[str, torch.Tensor] = {}
    frames = [frame(core)] if frame is not None else None
    track = SEGMENT in info
    if track:
        since = torch.zeros(B, dtype=torch.long, device=core.device)
        rsum = torch.zeros(RECOVERY_STEPS, dtype=torch.float64, device=core.device)
        rcnt = torch.zeros(RECOVERY_STEPS, dtype=torch.long, device=core.device)
    steps = 0
    while not bool((count >= k).all()):
        if max_steps is not None and steps >= max_steps:
            raise RuntimeError(f"{int((count < k).sum())} rows had not finished {k} episodes after {steps} steps")
        seg = info[SEGMENT].clone() if track else None
        obs, reward, term, trunc, info = core.step(policy(obs, info))
        steps += 1
        if track:
            on = (seg > 0) & (count < k)
            b = since.clamp(max=RECOVERY_STEPS - 1)[on]
            rsum.index_add_(0, b, reward[on].to(rsum.dtype))
            rcnt.index_add_(0, b, torch.ones_like(b))
            since = torch.where((info[SEGMENT] != seg) | term | trunc, 0, since + 1)
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
    if track:
        res["recovery_sum"], res["recovery_count"] = rsum.cpu().numpy(), rcnt.cpu().numpy()
    if frames is not None:
        res["timeline"] = np.stack([np.asarray(f) for f in frames])
    return res


def constant_policy(core, action: int) -> Policy:
    """The same action in every row at every step."""
    a = torch.full((core.B,), int(action), dtype=torch.long, device=core.device)
    return lambda obs, info: a


__all__ = ["RECOVERY_STEPS", "Policy", "constant_policy", "run_episodes"]
