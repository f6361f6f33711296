"""Peak-memory evaluation: replay a whole recorded trace once and measure the heap at its peak.

The allocation env's usual episodes end at the first request that fits nowhere (Lim & Maddukuri's return), which
says nothing about how much memory a placement policy needs for a real program. ``replay_peak`` plays one policy
over a whole trace on a fixed heap with ``on_fail="drop"`` (a request that fits nowhere is counted as a failure
and the program goes on) and reports, per method:

* ``extent_over_live``: the heap's high-water mark (the highest cell ever used, plus one: what ``brk`` would have
  reached) over the maximum live cells, the measure Johnstone and Wilson report (the heap the allocator needed at
  its largest against the most the program ever had live); 1.0 is perfect, and what the ideal compacting heap
  (the capacity bound) gets by definition;
* ``frag_at_peak``: at the moment live cells peak (the latest such moment), 1 - live / extent there: the share of
  the heap's span wasted at the program's peak;
* ``failures``: allocations that fitted nowhere (dropped; their frees are ignored). A fixed heap caps the
  extent, so a policy that needs more memory than the heap has shows failures instead of a larger ratio;
* ``decision_us`` (median) and ``decision_us_p99``: wall time per decision, the policy's choice plus the env's
  placement and the frees up to the next request, on this process's threads; ``policy_us``: the policy's choice
  alone (median). The fixed rules replay together (one heap each, stepping as one batch), so their times are a
  batched step's over the number of rules; the agent replays alone.

The heap is sized from the trace (``peak_setup``): bytes become cells at ``granularity`` bytes per cell (``auto``:
the smallest power of two that keeps the trace's peak live cells within ``max_cells / headroom``), and the heap has
``headroom`` times the peak live cells. Each placement's live cells and end address are read at the decision, so
a peak that lasts one request between two frees is counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.workloads.traces import (
    OP_ALLOC,
    cells_needed,
    peak_live,
    read_trace,
    resolve_trace,
    shipped_traces,
)

PEAK_KEYS = ("extent_over_live", "frag_at_peak", "failures", "peak_live", "peak_extent", "decisions", "invalid",
             "complete", "decision_us", "decision_us_p99", "policy_us")


@dataclass(frozen=True)
class PeakSetup:
    """A trace's peak replay: the cells per block, the heap and how many allocations it has."""

    trace: str
    granularity: int
    cells: int
    peak_live: int  # the trace's maximum live cells at this granularity
    allocations: int  # allocation requests replayed
    largest: int  # the largest block, in cells

    def env_config(self, base: AllocConfig | None = None, **overrides) -> AllocConfig:
        """The allocation env of this replay (over ``base``: its action space and observation options), a whole
        trace in one episode, failures dropped."""
        kw = dict(cells=self.cells, stream="trace", on_fail="drop", max_allocs=self.allocations,
                  max_invalid=max(1000, self.allocations), trial_episodes=1, skip_forced=False, ideal=False,
                  stream_params={"path": self.trace, "granularity": self.granularity, "window": None,
                                 "random_start": False, "oversize": "error"})
        return AllocConfig.from_kwargs(base, **{**kw, **overrides}).validate()


def peak_setup(trace: str, granularity: int | str = "auto", cells: int | None = None, headroom: float = 2.0,
               max_cells: int = 65536) -> PeakSetup:
    """Size the peak replay of ``trace`` (a shipped name or a path). With ``granularity="auto"`` the smallest power
    of two (bytes per cell, at least 16, malloc's usual alignment) whose peak live cells times ``headroom`` fit in
    ``cells`` (or ``max_cells``); ``cells`` defaults to ``ceil(headroom x peak live cells)``."""
    if not headroom >= 1.0:
        raise ValueError(f"headroom must be >= 1 (the heap holds headroom x the peak live cells), got {headroom}")
    if cells is not None and int(cells) < 2:
        raise ValueError(f"cells must be an integer >= 2, got {cells!r}")
    path = resolve_trace(trace)
    events = read_trace(path)
    kept = events[:, 0] == OP_ALLOC
    if not kept.any():
        raise ValueError(f"trace {path} has no allocation to replay")
    budget = int(cells) if cells is not None else int(max_cells)
    if granularity == "auto":
        g, top = 16, int(events[kept, 2].max())
        while math.ceil(peak_live(events, g) * headroom) > budget:
            if g >= top:  # every block is one cell already: the live blocks alone overflow the heap
                raise ValueError(f"trace {path}: {peak_live(events, g)} blocks are live at once, "
                                 f"more than a heap of {budget} cells holds with headroom {headroom}; use more "
                                 "cells (an agent that observes a bitmap or picks addresses is replayed on the "
                                 "cells it was trained on)")
            g *= 2
    elif isinstance(granularity, (int, np.integer)) and not isinstance(granularity, bool) and granularity >= 1:
        g = int(granularity)
    else:
        raise ValueError(f"granularity must be 'auto' or a positive number of bytes per cell, got {granularity!r}")
    peak = peak_live(events, g)
    n = int(cells) if cells is not None else max(2, math.ceil(peak * headroom))
    largest = int(cells_needed(events[kept], g).max())
    if largest > n:
        raise ValueError(f"trace {path}: its largest block needs {largest} cells at {g} B/cell, more than the "
                         f"heap's {n} cells; use more cells or a larger granularity")
    return PeakSetup(str(path), g, n, peak, int(kept.sum()), largest)


def replay_peak(core: AllocCore, policy, seed: int = 0) -> list[dict]:
    """Play ``policy(obs, info) -> actions`` ([B]) over the first episode of every row of ``core`` (built from a
    ``PeakSetup.env_config`` with ``autoreset=True``) and measure each row's peak (the module's docstring lists
    the keys; one dict per row). Rows step together, so with B > 1 the times are a step's over B. ``complete`` is
    False when a row's episode was cut short by ``max_invalid`` invalid actions."""
    cfg, dom, B = core.cfg, core.domain, core.B
    if cfg.on_fail != "drop" or cfg.stream != "trace" or not core.autoreset:
        raise ValueError("replay_peak needs a core of a PeakSetup.env_config (a trace stream, on_fail='drop') with "
                         "autoreset=True")
    obs, info = core.reset(seed=seed)
    z = torch.zeros(B, dtype=torch.long, device=dom.device)
    most_live, hw, hw_at_peak, invalid, decisions, failures = (z.clone() for _ in range(6))
    active = torch.ones(B, dtype=torch.bool, device=dom.device)
    complete = torch.zeros_like(active)
    times: list[float] = []
    chose: list[float] = []
    while bool(active.any()):
        t0 = time.perf_counter()
        a = policy(obs, info)
        chose.append(time.perf_counter() - t0)
        size = dom.request.clone()
        live = dom.heaps.used + size  # at the placement, before the frees that follow it
        obs, _, term, trunc, info = core.step(a)
        times.append(time.perf_counter() - t0)
        addr = dom.placed_at
        valid = addr >= 0
        placed = valid & active
        hw = torch.where(placed, torch.maximum(hw, addr + size), hw)
        at_peak = placed & (live >= most_live)  # ties: the latest, where the extent is largest
        most_live = torch.where(at_peak, live, most_live)
        hw_at_peak = torch.where(at_peak, hw, hw_at_peak)
        invalid += ~valid & active
        decisions += active
        done = (term | trunc) & active
        if bool(done.any()):
            final = info.get("final_info", info)
            failures = torch.where(done, final["dropped"], failures)
            cut = final.get("invalid_truncated", torch.zeros_like(done))
            complete = torch.where(done, trunc & ~cut, complete)
            active &= ~done
    us, policy_us = np.asarray(times) * 1e6 / B, np.asarray(chose) * 1e6 / B
    out = []
    for i in range(B):
        m, h, hp = int(most_live[i]), int(hw[i]), int(hw_at_peak[i])
        out.append({
            "extent_over_live": h / m if m else float("nan"),
            "frag_at_peak": 1.0 - m / hp if hp else float("nan"),
            "failures": int(failures[i]),
            "peak_live": m,
            "peak_extent": h,
            "decisions": int(decisions[i]),
            "invalid": int(invalid[i]),
            "complete": bool(complete[i]),
            "decision_us": float(np.median(us)),
            "decision_us_p99": float(np.percentile(us, 99)),
            "policy_us": float(np.median(policy_us)),
        })
    return out


RULE_ONLY = dict(action="heuristic", bitmap=False, history=0, summary=False, hole_features=0, meta_obs=False,
                 task_obs=False)  # what the fixed rules need observed: nothing (their replay is then cheaper)
PARAMS = ("traces", "granularity", "headroom", "max_cells", "seed", "rules")


def peak_evaluation(base: AllocConfig, make_policy, device="cpu", method: str = "agent", traces=(),
                    granularity: int | str = "auto", headroom: float = 2.0, max_cells: int = 65536,
                    seed: int = 0, rules: bool = True) -> dict:
    """Every trace (default: every shipped one) replayed whole by the agent (``make_policy(core) -> policy``, on
    the env config ``base`` it was trained with) and by every fixed rule, on the same heap. An agent whose
    observation or actions depend on the heap's size (a bitmap, the address space) is replayed on ``base.cells``
    cells, the granularity chosen to fit; otherwise the heap is sized from the trace (``peak_setup``). ``rules=False``
    leaves the rules and the bound out (when they were replayed on the same heaps already). Returns
    ``{"rows": [...], "columns": [...], "traces": {name: setup}}``; the bound row is the ideal compacting heap
    (extent = live, no failure: the heap holds the peak by construction)."""
    names = [traces] if isinstance(traces, str) else list(traces) or shipped_traces()
    sized_by_agent = base.bitmap or base.action == "address"
    rows, setups = [], {}
    for name in names:
        setup = peak_setup(name, granularity, base.cells if sized_by_agent else None, headroom, max_cells)
        setups[name] = {k: v for k, v in setup.__dict__.items() if k != "trace"}
        case = {"trace": name, "cells": setup.cells, "granularity": setup.granularity}
        core = AllocCore(1, setup.env_config(base), device=device)
        rows.append({**case, "method": method, **replay_peak(core, make_policy(core), seed)[0]})
        if not rules:
            continue
        rules_cfg = setup.env_config(heuristics=RULES, **RULE_ONLY)  # one row per rule, stepping together
        core = AllocCore(len(RULES), rules_cfg, device=device)
        every = torch.arange(len(RULES), device=core.device)
        for rule, res in zip(RULES, replay_peak(core, lambda obs, info, every=every: every, seed), strict=True):
            rows.append({**case, "method": rule, **res})
        rows.append({**case, "method": "capacity bound", "extent_over_live": 1.0, "frag_at_peak": 0.0, "failures": 0,
                     "peak_live": setup.peak_live, "peak_extent": setup.peak_live})
    return {"rows": rows, "columns": ["trace", "method", "cells", "granularity", *PEAK_KEYS], "traces": setups}


def peak_mode(base: AllocConfig, make_policy, params: dict, device="cpu", method: str = "agent") -> dict:
    """``eval.mode=peak``: ``peak_evaluation`` with ``eval.mode_params`` (checked: an unknown key is an error)."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f"eval.mode_params: unknown key(s) {unknown} for eval.mode=peak; valid: {', '.join(PARAMS)}")
    return peak_evaluation(base, make_policy, device, method, **params)


__all__ = ["PEAK_KEYS", "PeakSetup", "peak_setup", "peak_evaluation", "peak_mode", "replay_peak"]
