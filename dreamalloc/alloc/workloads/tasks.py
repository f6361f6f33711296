"""Task distributions: each heap draws its task (a stream family plus parameters) per episode, or per
trial of K episodes in meta-RL (``set_trial_length``; the env calls it with its ``trial_episodes``).

A task is a named stream configuration; an entry with parameter ranges is a task distribution that
expands, reproducibly, into ``samples`` concrete tasks (``core.tasks.expand_tasks``). ``TaskStream`` keeps one
sub-stream per task, batched over all heaps, and routes each heap to the sub-stream of the task it drew
from its (seed, trial) pair, so the draw is reproducible per heap like everything else. ``task_id`` tells
which task each heap runs (for analysis only: agents see it only if a config says so).
"""

from __future__ import annotations

import torch

from dreamalloc.alloc.workloads.base import Requests, RequestStream
from dreamalloc.alloc.workloads.params import TASK_LIST
from dreamalloc.core.rng import CounterRNG
from dreamalloc.core.tasks import expand_tasks


def task_stream(make_stream, task: dict, batch: int, cells: int, device) -> RequestStream:
    """The stream of a concrete task; a bad stream name or parameter fails naming the task."""
    try:
        return make_stream(task["stream"], batch, cells, device, **task["params"])
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"task {task['name']!r}: {e}") from None


def listed_tasks(params) -> list[tuple[str, dict]] | None:
    """(stream, params) of each task a ``tasks`` list param names (expanded), or None without such a list: what
    ``RequestStream.tasks_of`` answers for the streams that draw or switch among tasks."""
    tasks = params.get("tasks") if isinstance(params, dict) else None
    if not isinstance(tasks, (list, tuple)):
        return None
    return [(t["stream"], dict(t.get("params") or {})) for t in expand_tasks(tasks)]


class TaskStream(RequestStream):
    SALT = 11
    PARAMS = {"tasks": TASK_LIST}

    @classmethod
    def tasks_of(cls, params):
        return listed_tasks(params)

    def __init__(self, batch, cells, device="cpu", tasks=()):
        from dreamalloc.alloc.workloads import make_stream  # the registry imports this module

        super().__init__(batch, cells, device)
        self.tasks = expand_tasks(tasks)
        weights = torch.tensor([t["weight"] for t in self.tasks], dtype=torch.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.cdf = (weights.cumsum(0) / weights.sum()).to(self.device)
        self.streams = [task_stream(make_stream, t, batch, cells, device) for t in self.tasks]
        self.task_id = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.rng = CounterRNG(self.batch, self.device)
        self.per_trial = 1  # episodes per task draw: a meta-RL trial keeps its task (set_trial_length)

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    def set_trial_length(self, k: int) -> None:
        self.per_trial = max(int(k), 1)

    def reset(self, heaps, rows, seed, episode):
        self.rng.reseed(rows, seed, torch.div(episode, self.per_trial, rounding_mode="floor"), self.SALT)
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
