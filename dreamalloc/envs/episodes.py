"""Per-row episode bookkeeping shared by the batched cores (allocation and load balancing): which rows reset,
with which stream seed and episode number, so both cores seed their episodes the same way."""

from __future__ import annotations

import numpy as np
import torch


def reset_rows(seeds: torch.Tensor, episodes: torch.Tensor, rows, seed, unit: str = "env") -> torch.Tensor:
    """The rows to reset (all when ``rows`` is None), with ``seeds`` / ``episodes`` updated in place: a ``seed``
    (one int per row, or one int for row r = seed + r) restarts the episode count at 0; without it each row
    moves on to its next episode (rows never seeded draw fresh OS entropy)."""
    device = seeds.device
    rows = torch.arange(seeds.numel(), device=device) if rows is None else torch.as_tensor(
        rows, dtype=torch.long, device=device)
    if seed is not None:
        s = torch.as_tensor(seed, dtype=torch.long, device=device).reshape(-1)
        if s.numel() not in (1, rows.numel()):
            raise ValueError(f"seed must be one int or one per {unit} ({rows.numel()}), got {s.numel()} seeds")
        seeds[rows] = s + torch.arange(rows.numel(), device=device) if s.numel() == 1 else s
        episodes[rows] = 0
    else:
        never = rows[episodes[rows] < 0]
        if never.numel():
            entropy = np.random.SeedSequence().generate_state(never.numel(), np.uint32).astype(np.int64)
            seeds[never] = torch.as_tensor(entropy, device=device)
        episodes[rows] += 1
    return rows
