"""Reference solvers of the memory-mapping game, on one ``Instance`` at a time (numpy; scipy's HiGHS for the
MILP). A placement is an int64 array of offsets in the instance's buffer order, -1 for slow memory.

* ``greedy`` (XLA-style): buffers in decreasing ``size`` (the heap simulator's default global
  decreasing-size order), ``area`` (size x live-range length) or benefit ``density`` (benefit / size), each
  placed best-fit: into the smallest free gap of the time x address plane over its live range that holds it
  (lowest address among equals); slow memory when none does.
* ``first_fit``: buffers in game order (``start``) or decreasing ``size``, each at the lowest address free over
  its live range.
* ``milp``: the exact optimum (binary in/out per buffer, continuous offsets, one binary order per pair of buffers
  live together, big-M = capacity), solved by HiGHS with a time limit; reports the value found and the bound
  HiGHS proves (equal when ``optimal``).
* ``brute_force``: every placement of a tiny instance (every offset or slow, per buffer), the test oracle.
* ``rollout_search`` (``search_ff``): decision-time search with the exact game (a one-step lookahead over the
  allowed actions, each scored by a first-fit rollout of the rest): what planning can add in the game's own
  action space (not a learnt model).
* ``game_gaps`` / ``game_optimum``: the game's own rule (the first K feasible gaps of the buffer in turn) and
  the best return over every action sequence of a tiny instance.
"""

from __future__ import annotations

import time

import numpy as np

from dreamalloc.mallocgame.instances import Instance


def free_gaps(lo: np.ndarray, hi: np.ndarray, capacity: int) -> list[tuple[int, int]]:
    """Maximal free address ranges (bottom, length) of [0, capacity) around occupied ranges [lo, hi)."""
    out, at = [], 0
    for a, b in sorted(zip(lo.tolist(), hi.tolist(), strict=True)):
        if a > at:
            out.append((at, a - at))
        at = max(at, b)
    if at < capacity:
        out.append((at, capacity - at))
    return out


def _live_with(inst: Instance, i: int, offsets: np.ndarray) -> np.ndarray:
    """Indices of the placed buffers live at some time of buffer i's live range."""
    return np.nonzero((offsets >= 0) & (inst.start < inst.end[i]) & (inst.end > inst.start[i]))[0]


def gaps_for(inst: Instance, i: int, offsets: np.ndarray) -> list[tuple[int, int]]:
    j = _live_with(inst, i, offsets)
    return free_gaps(offsets[j], offsets[j] + inst.size[j], inst.capacity)


def check_placement(inst: Instance, offsets) -> float:
    """The placement's total benefit; a ValueError if a buffer leaves the memory or two buffers live at the
    same time overlap in address."""
    off = np.asarray(offsets, np.int64)
    if off.shape != (inst.n,):
        raise ValueError(f"a placement of {inst.name!r} needs {inst.n} offsets, got shape {off.shape}")
    fast = off >= 0
    if bool((off[fast] + inst.size[fast] > inst.capacity).any()):
        raise ValueError(f"{inst.name!r}: a buffer ends above the capacity {inst.capacity}")
    for i, j in inst.overlapping_pairs():
        if fast[i] and fast[j] and off[i] < off[j] + inst.size[j] and off[j] < off[i] + inst.size[i]:
            raise ValueError(f"{inst.name!r}: buffers {i} and {j} are live together and overlap in address")
    return float(inst.benefit[fast].sum())


ORDERS = ("size", "area", "density", "start")


def _order(inst: Instance, order: str) -> np.ndarray:
    idx = np.arange(inst.n)
    if order == "size":
        return np.lexsort((idx, -inst.size))
    if order == "area":
        return np.lexsort((idx, -inst.size * (inst.end - inst.start)))
    if order == "density":
        return np.lexsort((idx, -inst.benefit / inst.size))
    if order == "start":
        return idx
    raise ValueError(f"unknown buffer order {order!r}; choose one of {', '.join(ORDERS)}")


def greedy(inst: Instance, order: str = "size") -> np.ndarray:
    """XLA-style global best-fit in the time x address plane (see the module docstring)."""
    off = np.full(inst.n, -1, np.int64)
    for i in _order(inst, order):
        fits = [(length, bottom) for bottom, length in gaps_for(inst, i, off) if length >= inst.size[i]]
        if fits:
            off[i] = min(fits)[1]
    return off


def first_fit(inst: Instance, order: str = "start") -> np.ndarray:
    off = np.full(inst.n, -1, np.int64)
    for i in _order(inst, order):
        fits = [bottom for bottom, length in gaps_for(inst, i, off) if length >= inst.size[i]]
        if fits:
            off[i] = fits[0]
    return off


def milp(inst: Instance, time_limit: float = 10.0) -> dict:
    """The exact optimum by MILP (HiGHS): {value, bound, optimal, offsets, seconds, status}."""
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.optimize import milp as solve
    from scipy.sparse import coo_matrix

    n, C, s = inst.n, float(inst.capacity), inst.size.astype(float)
    pairs = inst.overlapping_pairs()
    m = len(pairs)
    nv = 2 * n + m  # x (in fast), o (offset), z (pair order)
    c = np.zeros(nv)
    c[:n] = -inst.benefit
    lb = np.zeros(nv)
    ub = np.concatenate([np.ones(n), C - s, np.ones(m)])
    integrality = np.concatenate([np.ones(n), np.zeros(n), np.ones(m)])
    rows, cols, vals, hi = [], [], [], []
    for p, (i, j) in enumerate(pairs):
        r = 2 * p  # o_i + s_i <= o_j + C (1 - z) + C (2 - x_i - x_j)
        rows += [r] * 5
        cols += [n + i, n + j, 2 * n + p, i, j]
        vals += [1.0, -1.0, C, C, C]
        hi.append(3 * C - s[i])
        rows += [r + 1] * 5  # o_j + s_j <= o_i + C z + C (2 - x_i - x_j)
        cols += [n + j, n + i, 2 * n + p, i, j]
        vals += [1.0, -1.0, -C, C, C]
        hi.append(2 * C - s[j])
    cons = []
    if m:
        A = coo_matrix((vals, (rows, cols)), shape=(2 * m, nv)).tocsr()
        cons.append(LinearConstraint(A, -np.inf, np.array(hi)))
    t0 = time.perf_counter()
    res = solve(c, constraints=cons, integrality=integrality, bounds=Bounds(lb, ub),
                options={"time_limit": float(time_limit), "disp": False})
    secs = time.perf_counter() - t0
    bound = -float(getattr(res, "mip_dual_bound", np.nan)) if getattr(res, "mip_dual_bound", None) is not None \
        else float(inst.total_benefit)
    if res.x is None:
        return {"value": 0.0, "bound": bound, "optimal": False, "offsets": np.full(n, -1, np.int64),
                "seconds": secs, "status": int(res.status)}
    off = _compact(inst, res.x[:n] > 0.5, res.x[n:2 * n], pairs, res.x[2 * n:] > 0.5)
    value = check_placement(inst, off)
    return {"value": value, "bound": max(bound, value), "optimal": res.status == 0, "offsets": off, "seconds": secs,
            "status": int(res.status)}


def _compact(inst: Instance, x: np.ndarray, o: np.ndarray, pairs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Integer offsets for the MILP's choice: every chosen buffer as low as the chosen buffers the solution
    puts below it allow (a longest path over the pairs' order), so solver tolerances cannot make two live
    buffers overlap; never higher than the solution's own offsets, up to those tolerances."""
    below: list[list[int]] = [[] for _ in range(inst.n)]
    for (i, j), zp in zip(pairs.tolist(), z.tolist(), strict=True):
        if x[i] and x[j]:
            lo, hi = (i, j) if zp else (j, i)
            below[hi].append(lo)
    off = np.full(inst.n, -1, np.int64)
    for j in sorted(np.nonzero(x)[0].tolist(), key=lambda j: o[j]):
        off[j] = max([0] + [int(off[i] + inst.size[i]) for i in below[j]])
    return off


def brute_force(inst: Instance) -> tuple[float, np.ndarray]:
    """The best placement over every offset (or slow) of every buffer: for tiny instances only."""
    n, C = inst.n, inst.capacity
    conflicts = [[j for j in range(i) if inst.start[i] < inst.end[j] and inst.start[j] < inst.end[i]]
                 for i in range(n)]
    best = [-1.0, np.full(n, -1, np.int64)]
    off = np.full(n, -1, np.int64)

    def go(i: int, value: float) -> None:
        if value + inst.benefit[i:].sum() <= best[0]:
            return
        if i == n:
            best[0], best[1] = value, off.copy()
            return
        for o in range(C - int(inst.size[i]) + 1):
            if all(off[j] < 0 or o >= off[j] + inst.size[j] or off[j] >= o + inst.size[i] for j in conflicts[i]):
                off[i] = o
                go(i + 1, value + inst.benefit[i])
        off[i] = -1
        go(i + 1, value)

    go(0, 0.0)
    return best[0], best[1]


def game_gaps(inst: Instance, offsets: np.ndarray, k: int, n_gaps: int) -> list[tuple[int, int]]:
    """The game's choices for buffer k: the first ``n_gaps`` feasible gaps (bottom, length), in address order."""
    return [g for g in gaps_for(inst, k, offsets) if g[1] >= inst.size[k]][:n_gaps]


def game_optimum(inst: Instance, n_gaps: int) -> float:
    """The best total benefit over every action sequence of the game (tiny instances only)."""
    off = np.full(inst.n, -1, np.int64)

    def go(k: int) -> float:
        if k == inst.n:
            return 0.0
        best = go(k + 1)
        for bottom, _ in game_gaps(inst, off, k, n_gaps):
            off[k] = bottom
            best = max(best, inst.benefit[k] + go(k + 1))
            off[k] = -1
        return best

    return go(0)


def _first_fit_rest(inst: Instance, off: np.ndarray, k: int, n_gaps: int) -> float:
    """The benefit the game's first-fit policy (the lowest feasible gap, else slow) adds from buffer k on."""
    off, value = off.copy(), 0.0
    for j in range(k, inst.n):
        g = game_gaps(inst, off, j, n_gaps)
        if g:
            off[j] = g[0][0]
            value += inst.benefit[j]
    return value


def rollout_search(inst: Instance, n_gaps: int = 8) -> np.ndarray:
    """Decision-time search with the exact game as its model: at every buffer, each allowed action (K gaps,
    slow) is scored by its benefit plus a first-fit rollout of the rest, and the best is played (ties: slow,
    then the lowest gap). A one-step rollout of a policy that is consistent along its own trajectory, so it
    never does worse than first-fit."""
    off = np.full(inst.n, -1, np.int64)
    for k in range(inst.n):
        best = (_first_fit_rest(inst, off, k + 1, n_gaps), 0, -1)
        for rank, (bottom, _) in enumerate(game_gaps(inst, off, k, n_gaps)):
            off[k] = bottom
            best = max(best, (inst.benefit[k] + _first_fit_rest(inst, off, k + 1, n_gaps), -rank - 1, bottom))
            off[k] = -1
        off[k] = best[2]
    return off


SOLVERS = {"greedy_size": lambda i: greedy(i, "size"), "greedy_area": lambda i: greedy(i, "area"),
           "greedy_density": lambda i: greedy(i, "density"), "first_fit_start": lambda i: first_fit(i, "start"),
           "first_fit_size": lambda i: first_fit(i, "size"), "search_ff": rollout_search}

__all__ = ["ORDERS", "SOLVERS", "brute_force", "check_placement", "first_fit", "free_gaps", "game_gaps",
           "game_optimum", "gaps_for", "greedy", "milp", "rollout_search"]
