"""Adversarial sequences that exactly one placement rule survives, and Mandal & Rohil's pre-holed heap.

``adversarial`` (target = first | next | best | worst | second; also ``ff-good``, ``nf-good``, ``sf-good``)
draws, per (seed, episode), a script in four acts, then Lim's random stream (``RandomStream``) continues:

1. Tiling. Blocks fill the heap from address 0 to N. With one free run every rule places a block at its
   start (second fit falls back to the first run, next fit's rover sits at that start), so all five rules
   build the same layout. Some blocks are then freed by allocation number (``S_FREE_SEQ``) to leave k in
   {3, 4, 5} candidate holes H_0 .. H_{k-1} of distinct sizes (address order), plus 0-2 decoy holes too small
   for what comes next. Before the holes are freed, one block may be freed and allocated again: it is the
   only hole then, so every rule puts it back where it was, and next fit's rover moves to its end.
2. The probe: one request of size s <= min |H_i|. Every candidate fits, and the rules part ways:
   first takes H_0, second H_1, best the smallest, worst the largest, next the first hole ending after the
   rover. The layout makes the target's pick H_t a hole no other rule picks:
       first:  t = 0, H_0 neither smallest nor largest, rover in [end(H_0), end(H_{k-1}));
       second: t = 1, H_1 neither smallest nor largest, rover not in [end(H_0), end(H_1));
       next:   t >= 2, H_t neither smallest nor largest, rover in [end(H_{t-1}), end(H_t));
       best:   t >= 2, H_t the strictly smallest, rover not in [end(H_{t-1}), end(H_t));
       worst:  t >= 2, H_t the strictly largest, rover not in [end(H_{t-1}), end(H_t)).
3. The test. Each candidate H_i is followed by a block P_i (and P_i by another block, never a hole). For
   every i != t, P_i is freed, merging into H_i a run of exactly e_i = |H_i| + |P_i| cells where the probe
   did not land, and e_i - s cells where it did (it sits at the run's start). The e_i are distinct and larger
   than every hole, and they are requested in decreasing order: each request then fits exactly one run
   whatever the rule, so the target (whose H_i, i != t, are all whole) places them all, while a rule whose
   probe landed in H_j finds nothing for e_j and the episode ends there.
4. The tail blocks (at least N / 10 cells at the top of the heap) are freed, so the survivor goes on into
   the random stream with room to spare, as in Lim's bf-good / wf-good.

Sizes scale with N (candidate holes up to N/10 cells, test runs up to 3N/20, filler blocks N/64 to N/10);
the smallest heap is 64 cells.

``blind`` (a list of rules, or true for all five; k defaults to max(3, their number)): the layout above
gives away part of the target (best's H_t is the smallest hole, first's is H_0, ...), so an agent can read
the winner off the heap before the probe. A blind layout is drawn with every listed rule taking a candidate
of its own (first H_0, second H_1, best the smallest, worst the largest, next the one its rover is placed
before) and every P_i sized to make a test run e_i; only then is t the target's candidate. The requests up
to the probe are the same whatever the target (same seed), so only the outcome of an episode (which rule
died on a test) tells the target: the meta-RL setting where memory across episodes is the one way to gain.
The guarantee holds for the default ``align="start"``: with ``align="end"`` the tiling fills the heap from
the top, the layout is mirrored and the targeting does not hold.

``preholed`` (Mandal & Rohil, docs/reference.md section 2): at reset the heap already holds blocks (their N = 100
layout, occupied cells 5-14, 25-29, 40-54, 65-69, 80-94, scaled in proportion to N, or ``occupied`` given as
inclusive [start, end] cell ranges), placed only into empty heaps. They count as allocations of the episode
(``n_allocs``, block ages) but earn no reward; next fit's rover starts at 0, as on a fresh heap. Then the
list ``sizes`` is requested once in order, and ``then`` continues: "random" (Lim's random stream, which may
also free the pre-placed blocks) or "repeat" (the list again and again, allocations only). With
``skip_unfit`` (default, as in their app) a listed size that fits in no free run during the first pass is
skipped instead of ending the episode (when every listed size is skipped, the continuation starts at once);
the continuation follows the env's rule. Pre-placing only into empty heaps keeps composite streams (shift
resets every task's stream at episode start) from placing over live blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dreamalloc.alloc.heap.heuristics import RULES
from dreamalloc.alloc.heap.runs import FreeRuns
from dreamalloc.alloc.workloads.base import ALLOC, S_ALLOC, S_FREE_SEQ, Requests, RequestStream, Script, ScriptedStream
from dreamalloc.alloc.workloads.lim import RandomStream
from dreamalloc.alloc.workloads.params import BOOL, INT, RANDOM_PARAMS, checked, optional

MIN_CELLS = 64
HOLES = (3, 4, 5)


@dataclass(frozen=True)
class Plan:
    """One drawn adversarial sequence: the candidate holes (address order), the probe and the test sizes."""

    cells: int
    target: str
    hole_start: tuple[int, ...]
    hole_size: tuple[int, ...]
    target_hole: int  # t: the candidate only the target rule picks for the probe
    probe: int  # s
    tests: tuple[int, ...]  # the e_i, in request (decreasing) order
    rover: int  # next fit's roving pointer at the probe
    script: Script


def _split(rng: np.random.Generator, total: int, lo: int, hi: int) -> list[int]:
    """Cut ``total`` cells into blocks of lo..hi cells (the last one may be shorter)."""
    out = []
    while total > 0:
        b = min(total, int(rng.integers(lo, hi + 1)))
        out.append(b)
        total -= b
    return out


def next_fit_pick(hole_end: list[int], rover: int) -> int:
    """Index of the candidate next fit takes when all fit: the first ending after the rover, else the first."""
    return next((i for i, end in enumerate(hole_end) if end > rover), 0)


def _draw_target_hole(rng: np.random.Generator, k: int, target: str) -> tuple[int, int]:
    """(t, size rank of H_t) for a layout that only ``target`` turns into a survivor."""
    if target in ("first", "second"):
        return (0 if target == "first" else 1), int(rng.integers(1, k - 1))
    t = int(rng.integers(2, k))
    return t, {"next": int(rng.integers(1, k - 1)), "best": 0, "worst": k - 1}[target]


def _draw_blind_ranks(rng: np.random.Generator, k: int, rules: tuple[str, ...]) -> tuple[list[int], int]:
    """Size ranks of H_0 .. H_{k-1} under which every rule of ``rules`` takes a candidate of its own, and
    the candidate next fit must take (-1 when next is not among them): first H_0, second H_1, best the
    smallest, worst the largest, next one that none of the others takes (its rover is placed to match)."""
    for _ in range(10_000):
        ranks = [int(r) for r in rng.permutation(k)]
        pick = {"first": 0, "second": 1, "best": ranks.index(0), "worst": ranks.index(k - 1)}
        taken = [pick[r] for r in rules if r != "next"]
        if len(set(taken)) < len(taken):
            continue
        nxt = -1
        if "next" in rules:
            free = [i for i in range(k) if i not in taken]
            if not free:
                continue
            nxt = int(rng.choice(free))
        return ranks, nxt
    raise AssertionError(f"no blind layout for rules {rules} with {k} holes")  # excluded by validation


def adversarial_plan(rng: np.random.Generator, cells: int, target: str, holes: int | None = None,
                     blind: tuple[str, ...] | None = None) -> Plan:
    """Draw the layout and script of one episode (see the module docstring for why each rule fails).

    With ``blind`` (a tuple of rules that includes ``target``) the layout, probe and test sizes are drawn
    before the target is looked at, so they tell nothing about it; the target only decides which runs the
    frees after the probe open (and so which test sizes are asked).
    """
    N = int(cells)
    k = int(holes) if holes is not None else (max(3, len(blind)) if blind else int(rng.choice(HOLES)))
    H, E = max(N // 10, k + 1), max(N // 20, k if blind else k - 1)
    by_rank = np.sort(rng.choice(np.arange(2, H + 1), size=k, replace=False))
    next_hole = -1
    if blind:
        ranks, next_hole = _draw_blind_ranks(rng, k, blind)
    else:
        t, rank = _draw_target_hole(rng, k, target)
        ranks = [int(r) for r in rng.permutation([r for r in range(k) if r != rank])]
        ranks.insert(t, rank)
    h = [int(by_rank[r]) for r in ranks]
    s = int(rng.integers(1, min(h) + 1))
    if blind:
        e_all = (max(h) + 1 + rng.choice(E, size=k, replace=False)).tolist()
        p = [e_all[i] - h[i] for i in range(k)]
    else:
        tested = [i for i in range(k) if i != t]
        e = dict(zip(tested, (max(h) + 1 + rng.choice(E, size=k - 1, replace=False)).tolist(), strict=True))
        p = [e[i] - h[i] if i != t else int(rng.integers(1, max(1, E // 2) + 1)) for i in range(k)]

    # filler between the candidates: lead (may be empty), k - 1 inner gaps (>= 1), tail (>= N // 10)
    tail_min = max(1, N // 10)
    spare = N - sum(h) - sum(p) - (k - 1) - tail_min
    if spare < 0:
        raise AssertionError(f"adversarial layout does not fit in {N} cells")  # excluded by MIN_CELLS
    gaps = [int(g) for g in rng.multinomial(spare, [1.0 / (k + 1)] * (k + 1))]
    for j in range(1, k):
        gaps[j] += 1
    gaps[k] += tail_min
    lo, hi = max(1, N // 64), max(1, N // 10)
    decoy_at: dict[int, int] = {}  # gap index -> decoy size (< s: no rule can use it for the probe)
    if s >= 2:
        for _ in range(int(rng.integers(0, 3))):
            d = int(rng.integers(1, s))
            room = [j for j in range(k + 1) if j not in decoy_at and gaps[j] >= d + 2]
            if room:
                decoy_at[int(rng.choice(room))] = d

    # pieces in address order: (kind, size, candidate index); fillers stay allocated unless in the tail
    pieces: list[tuple[str, int, int]] = []

    def filler(j: int) -> None:
        if j in decoy_at:
            d = decoy_at[j]
            left = int(rng.integers(1, gaps[j] - d))
            pieces.extend(("fill", b, -1) for b in _split(rng, left, lo, hi))
            pieces.append(("decoy", d, -1))
            pieces.extend(("fill", b, -1) for b in _split(rng, gaps[j] - d - left, lo, hi))
        else:
            pieces.extend(("fill", b, -1) for b in _split(rng, gaps[j], lo, hi))

    tail_from = 0
    for i in range(k):
        filler(i)
        pieces += [("hole", h[i], i), ("p", p[i], i)]
        tail_from = len(pieces)
    filler(k)
    start = np.concatenate([[0], np.cumsum([sz for _, sz, _ in pieces])]).tolist()
    assert start[-1] == N
    hole_piece = {i: j for j, (kind, _, i) in enumerate(pieces) if kind == "hole"}
    hole_start = [start[hole_piece[i]] for i in range(k)]
    hole_end = [hole_start[i] + h[i] for i in range(k)]

    # next fit's rover: the end of a filler or P block, chosen so that next fit picks H_t iff it is the target
    # (blind: so that it picks its own candidate, or anywhere when next is not among the rules)
    ends = [j for j, (kind, _, _) in enumerate(pieces) if kind in ("fill", "p")]
    if blind:
        cands = [j for j in ends if next_hole < 0 or next_fit_pick(hole_end, start[j + 1] % N) == next_hole]
    else:
        want = target == "next"
        cands = [j for j in ends if (next_fit_pick(hole_end, start[j + 1] % N) == t) == want]
    rp = int(rng.choice(cands))
    rover = start[rp + 1] % N
    if blind:  # only now does the target enter: the candidate its rule takes is the one left closed
        t = {"first": 0, "second": 1, "best": h.index(min(h)), "worst": h.index(max(h)), "next": next_hole}[target]
        e = {i: e_all[i] for i in range(k) if i != t}

    script: Script = [(S_ALLOC, sz) for _, sz, _ in pieces]
    seq = list(range(len(pieces)))  # allocation number of each piece's current block
    n_allocs = len(pieces)
    if rp != len(pieces) - 1:  # the last block ends at N and leaves the rover at 0 already
        script += [(S_FREE_SEQ, seq[rp]), (S_ALLOC, pieces[rp][1])]
        seq[rp], n_allocs = n_allocs, n_allocs + 1
    freed = [j for j, (kind, _, _) in enumerate(pieces) if kind in ("hole", "decoy")]
    script += [(S_FREE_SEQ, seq[j]) for j in rng.permutation(freed).tolist()]
    script.append((S_ALLOC, s))
    p_piece = [j for j, (kind, _, i) in enumerate(pieces) if kind == "p" and i != t]
    script += [(S_FREE_SEQ, seq[j]) for j in rng.permutation(p_piece).tolist()]
    tests = sorted(e.values(), reverse=True)
    script += [(S_ALLOC, v) for v in tests]
    script += [(S_FREE_SEQ, seq[j]) for j in range(tail_from, len(pieces)) if pieces[j][0] == "fill"]
    return Plan(N, target, tuple(hole_start), tuple(h), t, s, tuple(tests), rover, script)


def adversarial_script(rng: np.random.Generator, cells: int, target: str, holes: int | None = None) -> Script:
    return adversarial_plan(rng, cells, target, holes).script


def _blind_rules(name: str, blind, target: str, holes: int | None) -> tuple[str, ...] | None:
    """``blind`` as a tuple of rules (true: all five; false: None), checked against target and holes."""
    if blind is False or blind is None:
        return None
    rules = RULES if blind is True else blind
    listed = isinstance(rules, (list, tuple)) and not isinstance(rules, str)
    if not listed or not rules or any(r not in RULES for r in rules):
        raise ValueError(f"{name}: blind must be true, false or a list of placement rules among "
                         f"{', '.join(RULES)} (each takes a candidate hole of its own); got {blind!r}")
    rules = tuple(dict.fromkeys(rules))
    if target not in rules:
        raise ValueError(f"{name}: the target {target!r} must be one of the blind rules {list(rules)}")
    if len(rules) > max(HOLES):
        raise AssertionError("more rules than candidate holes")  # RULES has five, HOLES goes to five
    if holes is not None and holes < len(rules):
        raise ValueError(f"{name}: holes={holes} is too few for {len(rules)} blind rules (one candidate each)")
    return rules


class AdversarialStream(ScriptedStream):
    """A sequence only ``target`` survives, then the random stream (``free_prob``, ``size_min``, ``size_max``)."""

    NAME = "adversarial"
    SALT = 17
    PARAMS = {"target": checked(f"one of {', '.join(RULES)}"), "holes": optional(INT),
              "blind": checked("true, false or a list of placement rules"), **RANDOM_PARAMS}

    def __init__(self, batch, cells, device="cpu", target: str | None = None, holes: int | None = None,
                 blind=False, **random_kwargs):
        if target not in RULES:
            raise ValueError(f"{self.NAME}: target must name the rule that alone survives, one of "
                             f"{', '.join(RULES)}; got {target!r}")
        if int(cells) < MIN_CELLS:
            raise ValueError(f"{self.NAME}: cells (the heap size) must be >= {MIN_CELLS}, got {cells}")
        if holes is not None and (isinstance(holes, bool) or holes not in HOLES):
            raise ValueError(f"{self.NAME}: holes (candidate holes of the probe) must be one of {HOLES} or "
                             f"None (drawn per episode), got {holes!r}")
        self.blind = _blind_rules(self.NAME, blind, target, holes)
        self.target, self.holes = target, holes
        super().__init__(batch, cells, device, then=RandomStream(batch, cells, device, **random_kwargs))

    def plan(self, rng: np.random.Generator) -> Plan:
        return adversarial_plan(rng, self.cells, self.target, self.holes, self.blind)

    def script(self, rng):
        return self.plan(rng).script


class FfGoodStream(AdversarialStream):
    NAME = "ff-good"
    PARAMS = {k: v for k, v in AdversarialStream.PARAMS.items() if k != "target"}

    def __init__(self, batch, cells, device="cpu", **params):
        super().__init__(batch, cells, device, target="first", **params)


class NfGoodStream(AdversarialStream):
    NAME = "nf-good"
    PARAMS = {k: v for k, v in AdversarialStream.PARAMS.items() if k != "target"}

    def __init__(self, batch, cells, device="cpu", **params):
        super().__init__(batch, cells, device, target="next", **params)


class SfGoodStream(AdversarialStream):
    NAME = "sf-good"
    PARAMS = {k: v for k, v in AdversarialStream.PARAMS.items() if k != "target"}

    def __init__(self, batch, cells, device="cpu", **params):
        super().__init__(batch, cells, device, target="second", **params)


# --------------------------------------------------------------------------------------------------
# Mandal & Rohil's pre-holed heap
# --------------------------------------------------------------------------------------------------
MANDAL_CELLS = 100
MANDAL_OCCUPIED = ((5, 14), (25, 29), (40, 54), (65, 69), (80, 94))  # inclusive cell ranges at N = 100
MANDAL_SIZES = (8, 12, 5, 9, 11, 4, 6)
MIN_PREHOLED_CELLS = 20  # below it the scaled layout loses a hole
THEN = ("random", "repeat")


def mandal_layout(cells: int) -> list[tuple[int, int]]:
    """Mandal & Rohil's occupied ranges scaled to ``cells``: [s, e] -> [s N // 100, (e + 1) N // 100 - 1]."""
    N = int(cells)
    return [(a * N // MANDAL_CELLS, (b + 1) * N // MANDAL_CELLS - 1) for a, b in MANDAL_OCCUPIED]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class CycleStream(RequestStream):
    """Allocations of a fixed list of sizes, over and over (``preholed`` with ``then="repeat"``)."""

    def __init__(self, batch, cells, device="cpu", sizes=(1,)):
        super().__init__(batch, cells, device)
        self.list = torch.as_tensor(list(sizes), dtype=torch.long, device=self.device)
        self.pos = torch.zeros(self.batch, dtype=torch.long, device=self.device)

    def reset(self, heaps, rows, seed, episode):
        self.pos[rows] = 0

    def next(self, heaps, rows):
        p = self.pos[rows]
        self.pos[rows] = (p + 1) % self.list.numel()
        return Requests(torch.full_like(rows, ALLOC), self.list[p], torch.full_like(rows, -1))

    def state_dict(self):
        return {"pos": self.pos.clone()}

    def load_state_dict(self, state):
        self.pos.copy_(state["pos"])


class PreholedStream(ScriptedStream):
    """Mandal & Rohil's pre-holed heap, their request list once, then ``then`` (see the module docstring)."""

    NAME = "preholed"
    PARAMS = {"occupied": checked("null or a list of [start, end] cell ranges"),
              "sizes": checked("a non-empty list of integer sizes"), "then": checked(f"one of {', '.join(THEN)}"),
              "skip_unfit": BOOL, **RANDOM_PARAMS}

    def __init__(self, batch, cells, device="cpu", occupied=None, sizes=MANDAL_SIZES, then: str = "random",
                 skip_unfit: bool = True, **random_kwargs):
        N = int(cells)

        def bad(msg):
            raise ValueError(f"{self.NAME}: {msg}")

        if occupied is None:
            if N < MIN_PREHOLED_CELLS:
                bad(f"cells (the heap size) must be >= {MIN_PREHOLED_CELLS} for the scaled Mandal layout, got "
                    f"{cells}; or give occupied=[[start, end], ...]")
            blocks = mandal_layout(N)
        else:
            if not isinstance(occupied, (list, tuple)) or not all(
                    isinstance(r, (list, tuple)) and len(r) == 2 and all(_is_int(v) for v in r) for r in occupied):
                bad(f"occupied must be a list of [start, end] integer cell ranges (inclusive), got {occupied!r}")
            blocks = sorted((int(a), int(b)) for a, b in occupied)
            for a, b in blocks:
                if not 0 <= a <= b < N:
                    bad(f"occupied range [{a}, {b}] must satisfy 0 <= start <= end <= cells - 1 = {N - 1}")
            for (a0, b0), (a1, b1) in zip(blocks, blocks[1:], strict=False):
                if a1 <= b0:
                    bad(f"occupied ranges [{a0}, {b0}] and [{a1}, {b1}] overlap")
        if (isinstance(sizes, (str, bytes)) or not isinstance(sizes, (list, tuple)) or not sizes
                or not all(_is_int(v) for v in sizes)):
            bad(f"sizes must be a non-empty list of integer request sizes, got {sizes!r}")
        if not all(1 <= int(v) <= N for v in sizes):
            bad(f"sizes must lie in [1, cells = {N}], got {list(sizes)}")
        if then not in THEN:
            bad(f"then must be one of {', '.join(THEN)}; got {then!r}")
        if then == "repeat" and random_kwargs:
            bad(f"{sorted(random_kwargs)} only apply with then='random'")
        if not isinstance(skip_unfit, bool):
            bad(f"skip_unfit must be true or false, got {skip_unfit!r}")
        self.blocks, self.request_sizes, self.skip_unfit = blocks, [int(v) for v in sizes], skip_unfit
        cont = (RandomStream(batch, cells, device, **random_kwargs) if then == "random"
                else CycleStream(batch, cells, device, self.request_sizes))
        super().__init__(batch, cells, device, then=cont)

    def script(self, rng):
        return [(S_ALLOC, v) for v in self.request_sizes]

    def reset(self, heaps, rows, seed, episode):
        empty = rows[heaps.used[rows] == 0]
        for a, b in self.blocks:
            heaps._place(empty, torch.full_like(empty, a), torch.full_like(empty, b - a + 1))
        heaps.rover[empty] = 0
        super().reset(heaps, rows, seed, episode)

    def next(self, heaps, rows):
        if self.skip_unfit:  # move each pointer to the first listed size that fits some free run now
            p, length = self.ptr[rows], self.length[rows]
            listed = p < length
            if listed.any():
                r = rows[listed]
                largest = FreeRuns.of(heaps.occ[r]).largest()
                j = torch.arange(self.sizes.shape[1], device=self.device)
                ok = (j >= self.ptr[r, None]) & (j < self.length[r, None]) & (self.sizes[r] <= largest[:, None])
                self.ptr[r] = torch.where(ok.any(1), ok.long().argmax(1), self.length[r])
        return super().next(heaps, rows)


__all__ = ["AdversarialStream", "CycleStream", "FfGoodStream", "MANDAL_OCCUPIED", "MANDAL_SIZES", "NfGoodStream",
           "Plan", "PreholedStream", "SfGoodStream", "adversarial_plan", "adversarial_script", "mandal_layout"]
