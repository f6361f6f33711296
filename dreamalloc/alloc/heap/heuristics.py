"""Placement rules, vectorised across heaps: each picks one free run per heap and places the block at its
start (as Lim & Maddukuri do) or, with ``align="end"``, at its end.

Ties go to the lowest address (as in Lim & Maddukuri's best / worst fit, which sort stably by size).
"""

from __future__ import annotations

import torch

from dreamalloc.alloc.heap.runs import INF, FreeRuns

RULES = ("first", "next", "best", "worst", "second")
ALIGNS = ("start", "end")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown placement heuristic {rule!r}; choose one of {', '.join(RULES)}")
    return rule


def choose_run(runs: FreeRuns, size: torch.Tensor, rule: str, rover: torch.Tensor | None = None):
    """Index into ``runs`` of the run each heap's rule picks, and whether any run fits. [B] each.

    first:  the lowest-address run that fits.
    next:   the first run that fits and ends after the roving pointer (the run holding it or a later one),
            wrapping round to the lowest address; the rover sits just past the last placed block.
    best:   the smallest run that fits.   worst: the largest run.
    second: the second run that fits in address order; the first when only one does.
    """
    check_rule(rule)
    T = runs.start.numel()
    fits = runs.fitting(size)
    if rule == "first":
        primary = torch.zeros_like(runs.start)
    elif rule == "best":
        primary = runs.length
    elif rule == "worst":
        primary = runs.cells - runs.length
    elif rule == "second":
        r = runs.rank(fits)
        primary = torch.where(r == 2, 0, torch.where(r == 1, 1, 2))
    else:  # next
        if rover is None:
            raise ValueError("next fit needs the heaps' roving pointers (rover)")
        primary = (runs.start + runs.length <= rover[runs.heap]).long()
    key = torch.where(fits, primary * max(T, 1) + torch.arange(T, device=runs.start.device), INF)
    kmin = runs.segment_min(key)
    found = kmin != INF
    return torch.where(found, kmin % max(T, 1), 0), found


def place_address(runs: FreeRuns, size: torch.Tensor, rule: str, rover: torch.Tensor | None = None,
                  align: str = "start") -> torch.Tensor:
    """Start address each heap's rule chooses for its request; -1 where no free run fits."""
    if align not in ALIGNS:
        raise ValueError(f"unknown alignment {align!r}; choose one of {', '.join(ALIGNS)}")
    idx, found = choose_run(runs, size, rule, rover)
    if runs.start.numel() == 0:
        return torch.full_like(size, -1)
    addr = runs.start[idx]
    if align == "end":
        addr = addr + runs.length[idx] - size
    return torch.where(found, addr, -1)
