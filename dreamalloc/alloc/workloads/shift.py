"""In-episode distribution shift: the workload switches task while the agent is allocating.

``ShiftStream`` ("shift") runs a list of tasks in order (cycling) inside one episode. Segment lengths are
counted in allocation requests (the heap's request clock ``HeapBatch.clock``, the same clock as the pattern
families: successful allocations, plus dropped requests when the env drops what fits nowhere) and given by
``at``: an integer, or [lo, hi] for a length drawn uniformly per segment from each heap's own (seed, episode)
stream.

* ``schedule="abrupt"``: at the switch point every request comes from the next task.
* ``schedule="gradual"``: from the switch point on, each request comes from the next task with probability
  rising linearly from 0 to 1 over ``span`` allocations: a linear interpolation of the two request
  distributions (for the pattern families, exactly the mixture of their size and lifetime laws). Once it
  reaches 1 the next task is the current one and the next segment starts.

Blocks allocated under one task stay live after a switch until the new task's frees reach them (a
random-order free can pick any live block; a fixed-lifetime family only frees blocks it allocated
itself), as data from an earlier program phase does. ``task_id`` is the index of the task that issued
each heap's pending request and ``segment`` the number of switches so far in the episode (0 in the first
segment; a gradual switch counts once its blend is complete): the env reports both in ``info["task_id"]`` and
``info["segment"]``, for analysis only.
"""

from __future__ import annotations

import torch

from dreamalloc.alloc.workloads.base import Requests, RequestStream
from dreamalloc.alloc.workloads.params import INT, TASK_LIST, checked
from dreamalloc.alloc.workloads.tasks import listed_tasks, task_stream
from dreamalloc.core.rng import CounterRNG, splitmix64
from dreamalloc.core.tasks import expand_tasks

SCHEDULES = ("abrupt", "gradual")


def _segment(at) -> tuple[int, int]:
    if isinstance(at, bool):
        raise ValueError(f"at must be an integer >= 1 or [lo, hi], got {at!r}")
    if isinstance(at, int):
        lo = hi = at
    elif isinstance(at, (list, tuple)) and len(at) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in at):
        lo, hi = at
    else:
        raise ValueError(f"at must be an integer >= 1 or [lo, hi] (allocations per segment), got {at!r}")
    if not 1 <= lo <= hi:
        raise ValueError(f"at must satisfy 1 <= lo <= hi, got {at!r}")
    return int(lo), int(hi)


class ShiftStream(RequestStream):
    SWITCHES_IN_EPISODE = True
    SALT = 13
    PARAMS = {"tasks": TASK_LIST, "schedule": checked(f"one of {', '.join(SCHEDULES)}"),
              "at": checked("an integer >= 1 or [lo, hi]"), "span": INT}

    @classmethod
    def tasks_of(cls, params):
        return listed_tasks(params)

    def __init__(self, batch, cells, device="cpu", *, tasks=(), schedule: str = "abrupt", at=64,
                 span: int = 64):
        from dreamalloc.alloc.workloads import make_stream  # the registry imports this module

        super().__init__(batch, cells, device)
        self.tasks = expand_tasks(tasks)
        if len(self.tasks) < 2:
            raise ValueError(f"a shift needs at least two tasks to switch between, got {len(self.tasks)}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
        if isinstance(span, bool) or not isinstance(span, int) or span < 1:
            raise ValueError(f"span must be an integer >= 1 (allocations of the gradual blend), got {span!r}")
        self.schedule, self.span = schedule, int(span)
        self.lo, self.hi = _segment(at)
        self.streams = [task_stream(make_stream, t, batch, cells, device) for t in self.tasks]
        dev = self.device
        self.task_id = torch.zeros(self.batch, dtype=torch.long, device=dev)  # task of the pending request
        self.current = torch.zeros(self.batch, dtype=torch.long, device=dev)
        self.switch_at = torch.zeros(self.batch, dtype=torch.long, device=dev)  # clock of the next switch
        self.segment = torch.zeros(self.batch, dtype=torch.long, device=dev)  # switches so far this episode
        self.rng = CounterRNG(self.batch, dev)

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    def _draw_segment(self, rows: torch.Tensor) -> torch.Tensor:
        return self.rng.integers(rows, self.lo, self.hi) if self.hi > self.lo else torch.full_like(rows, self.lo)

    def reset(self, heaps, rows, seed, episode):
        self.rng.reseed(rows, seed, episode, self.SALT)
        self.current[rows] = 0
        self.task_id[rows] = 0
        self.segment[rows] = 0
        self.switch_at[rows] = self._draw_segment(rows)
        for k, s in enumerate(self.streams):  # decorrelated seeds: two tasks of one family draw differently
            s.reset(heaps, rows, splitmix64(seed.long() + 0x51ED27 * (k + 1)), episode)

    def next(self, heaps, rows):
        t = heaps.clock(rows)
        cur, sw = self.current[rows], self.switch_at[rows]
        nxt = (cur + 1) % len(self.tasks)
        if self.schedule == "abrupt":
            done = t >= sw
            w_next = done.double()
        else:
            w_next = ((t - sw).double() / self.span).clamp(0.0, 1.0)
            done = w_next >= 1.0
        if done.any():  # the next task becomes current and a new segment starts at this allocation count
            r = rows[done]
            self.current[r] = nxt[done]
            self.segment[r] += 1
            self.switch_at[r] = t[done] + self._draw_segment(r)
            cur = self.current[rows]
            nxt = (cur + 1) % len(self.tasks)
            w_next = torch.where(done, 0.0, w_next)
        u = self.rng.uniform(rows)
        src = torch.where(u < w_next, nxt, cur)
        self.task_id[rows] = src
        op, size, block = torch.empty_like(rows), torch.empty_like(rows), torch.empty_like(rows)
        for k, s in enumerate(self.streams):
            m = src == k
            if m.any():
                req = s.next(heaps, rows[m])
                op[m], size[m], block[m] = req.op, req.size, req.block
        return Requests(op, size, block)

    def state_dict(self):
        return {"task_id": self.task_id.clone(), "current": self.current.clone(),
                "switch_at": self.switch_at.clone(), "segment": self.segment.clone(), "rng": self.rng.state_dict(),
                "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state):
        for k in ("task_id", "current", "switch_at"):
            getattr(self, k).copy_(state[k])
        if "segment" in state:  # absent in checkpoints from before the segment counter
            self.segment.copy_(state["segment"])
        self.rng.load_state_dict(state["rng"])
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)
