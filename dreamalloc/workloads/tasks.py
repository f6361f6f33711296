"""Task distributions: each heap draws its task (a stream family plus parameters) per episode.

A task is a named stream configuration. ``TaskStream`` keeps one sub-stream per task, batched over all
heaps, and routes each heap to the sub-stream of the task it drew from its (seed, episode) pair, so the
draw is reproducible per heap like everything else. ``task_id`` tells which task each heap runs (for
analysis only: agents see it only if a config says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from dreamalloc.workloads.base import Requests, RequestStream
from dreamalloc.workloads.rng import CounterRNG


def _task_list(tasks) -> list[dict]:
    if not isinstance(tasks, Sequence) or isinstance(tasks, str) or len(tasks) == 0:
        raise ValueError(f"tasks must be a non-empty list of {{name, stream, params}} entries, got {tasks!r}")
    out = []
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping) or "stream" not in t:
            raise ValueError(f"task {i} must be a mapping with at least a 'stream' key, got {t!r}")
        unknown = sorted(set(t) - {"name", "stream", "params", "weight"})
        if unknown:
            raise ValueError(f"task {i} has unknown key(s) {unknown}; valid: name, stream, params, weight")
        out.append({"name": str(t.get("name") or t["stream"]), "stream": str(t["stream"]),
                    "params": dict(t.get("params") or {}), "weight": float(t.get("weight", 1.0))})
    return out


class TaskStream(RequestStream):
    SALT = 11

    def __init__(self, batch, cells, device="cpu", tasks=()):
        from dreamalloc.workloads import make_stream  # the registry imports this module

        super().__init__(batch, cells, device)
        self.tasks = _task_list(tasks)
        weights = torch.tensor([t["weight"] for t in self.tasks], dtype=torch.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.cdf = (weights.cumsum(0) / weights.sum()).to(self.device)
        self.streams = [make_stream(t["stream"], batch, cells, device, **t["params"]) for t in self.tasks]
        self.task_id = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.rng = CounterRNG(self.batch, self.device)

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    def reset(self, heaps, rows, seed, episode):
        self.rng.reseed(rows, seed, episode, self.SALT)
        u = self.rng.uniform(rows)
        tid = torch.searchsorted(self.cdf, u, right=True).clamp(max=len(self.tasks) - 1)
        self.task_id[rows] = tid
        for k, s in enumerate(self.streams):
            m = tid == k
            if m.any():
                s.reset(heaps, rows[m], seed[m], episode[m])

    def next(self, heaps, rows):
        op = torch.empty_like(rows)
        size = torch.empty_like(rows)
        block = torch.empty_like(rows)
        tid = self.task_id[rows]
        for k, s in enumerate(self.streams):
            m = tid == k
            if m.any():
                r = s.next(heaps, rows[m])
                op[m], size[m], block[m] = r.op, r.size, r.block
        return Requests(op, size, block)

    def state_dict(self):
        return {"task_id": self.task_id.clone(), "rng": self.rng.state_dict(),
                "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state):
        self.task_id.copy_(state["task_id"])
        self.rng.load_state_dict(state["rng"])
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)
