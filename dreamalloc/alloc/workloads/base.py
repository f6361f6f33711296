"""The request-stream interface that every workload family plugs into.

A stream is batched over heaps and seeded per heap: what heap b receives depends only on the
(seed, episode) pair it was reset with and on what is live in heap b, never on the other heaps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from dreamalloc.alloc.heap.state import HeapBatch
from dreamalloc.core.rng import numpy_generator

ALLOC, FREE, FREE_ALL = 0, 1, 2  # request kinds


@dataclass
class Requests:
    """One request per heap row: ``op`` in {ALLOC, FREE, FREE_ALL}; ``size`` for ALLOC; ``block`` (a live
    slot) for FREE, -1 meaning nothing to free (the request is skipped)."""

    op: torch.Tensor
    size: torch.Tensor
    block: torch.Tensor


class RequestStream(ABC):
    """Produces the next request of each heap, given what is live in it.

    ``PARAMS`` is the typed schema of the keyword parameters (``workloads/params.py``): every registered
    family declares one, and ``make_stream`` parses the given parameters with it.
    """

    PARAMS: ClassVar[dict | None] = None
    SWITCHES_IN_EPISODE: ClassVar[bool] = False  # its tasks change inside an episode (info has "segment")
    CELL_BYTES: ClassVar[int] = 0  # state per heap and cell, for the memory estimate at start

    def __init__(self, batch: int, cells: int, device: torch.device | str = "cpu"):
        self.batch, self.cells, self.device = int(batch), int(cells), torch.device(device)

    @abstractmethod
    def reset(self, heaps: HeapBatch, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor) -> None:
        """Start a new episode for the heap rows (which the caller has just emptied)."""

    @abstractmethod
    def next(self, heaps: HeapBatch, rows: torch.Tensor) -> Requests:
        """The next request of each heap row."""

    @classmethod
    def tasks_of(cls, params: dict) -> list[tuple[str, dict]] | None:
        """The tasks a stream with these parameters switches among, each as a stream of its own ((name, params)
        per task id, as ``info["task_id"]`` numbers them), or None for a stream of one task. Task streams and
        in-episode switching streams override it; the env sizes its task one-hot by it and the switching oracle
        plays each task alone."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 (stateless streams keep nothing)
        return None


# Script steps of adversarial sequences.
S_ALLOC, S_FREE_OLDEST, S_FREE_ALL = 0, 1, 2
S_FREE_SEQ = 3  # free the block that was the script's j-th allocation (j, 0-based, in the size field)
Script = list[tuple[int, int]]


class ScriptedStream(RequestStream):
    """A per-episode script of requests, drawn at reset for each heap, then a continuation stream.

    Subclasses define ``script(rng)``; the rng is a numpy Generator seeded by (seed, episode), so the script
    is reproducible per heap. FREE_OLDEST frees the live block allocated earliest in the episode.
    FREE_SEQ j frees the block made by the j-th allocation counted from the script's first request (heap
    allocations before the script do not shift j); nothing is freed when that block is no longer live.
    """

    SALT = 7

    def __init__(self, batch: int, cells: int, device: torch.device | str = "cpu",
                 then: RequestStream | None = None):
        super().__init__(batch, cells, device)
        self.then = then
        self.ops = torch.zeros((self.batch, 1), dtype=torch.long, device=self.device)
        self.sizes = torch.zeros_like(self.ops)
        self.length = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.ptr = torch.zeros_like(self.length)
        self.seq_base = torch.zeros_like(self.length)  # heap allocation count when the script started

    @abstractmethod
    def script(self, rng: np.random.Generator) -> Script:
        """The requests of one episode's adversarial part."""

    def reset(self, heaps, rows, seed, episode):
        scripts = [self.script(numpy_generator(int(s), int(e), self.SALT)) for s, e in
                   zip(seed.tolist(), episode.tolist(), strict=True)]
        L = max([len(s) for s in scripts] + [1])
        if L > self.ops.shape[1]:
            pad = L - self.ops.shape[1]
            self.ops = torch.nn.functional.pad(self.ops, (0, pad))
            self.sizes = torch.nn.functional.pad(self.sizes, (0, pad))
        width = self.ops.shape[1]
        flat = np.zeros((len(scripts), 2, width), dtype=np.int64)
        for i, sc in enumerate(scripts):
            if sc:
                flat[i, :, : len(sc)] = np.asarray(sc, dtype=np.int64).T
        flat_t = torch.from_numpy(flat).to(self.device)
        self.ops[rows], self.sizes[rows] = flat_t[:, 0], flat_t[:, 1]
        self.length[rows] = torch.tensor([len(s) for s in scripts], dtype=torch.long, device=self.device)
        self.ptr[rows] = 0
        self.seq_base[rows] = heaps.clock(rows)
        if self.then is not None:
            self.then.reset(heaps, rows, seed, episode)

    def next(self, heaps, rows):
        p = self.ptr[rows]
        scripted = p < self.length[rows]
        op = torch.full_like(rows, ALLOC)
        size = torch.zeros_like(rows)
        block = torch.full_like(rows, -1)
        if scripted.any():
            r, pp = rows[scripted], p[scripted]
            s_op, s_size = self.ops[r, pp], self.sizes[r, pp]
            self.ptr[r] = pp + 1
            starts = pp == 0
            if starts.any():
                self.seq_base[r[starts]] = heaps.clock(r[starts])
            oldest = heaps._oldest(r)
            op[scripted] = torch.where(s_op == S_ALLOC, ALLOC, torch.where(s_op == S_FREE_ALL, FREE_ALL, FREE))
            size[scripted] = torch.where(s_op == S_ALLOC, s_size, 0)
            blk = torch.where(s_op == S_FREE_OLDEST, oldest, -1)
            by_seq = s_op == S_FREE_SEQ
            if by_seq.any():
                rs = r[by_seq]
                hit = heaps.live[rs] & (heaps.block_seq[rs] == (self.seq_base[rs] + s_size[by_seq])[:, None])
                blk[by_seq] = torch.where(hit.any(1), hit.long().argmax(1), -1)
            block[scripted] = blk
        rest = ~scripted
        if rest.any():
            if self.then is None:
                raise RuntimeError(f"{type(self).__name__} ran out of script and has no continuation stream")
            nxt = self.then.next(heaps, rows[rest])
            op[rest], size[rest], block[rest] = nxt.op, nxt.size, nxt.block
        return Requests(op, size, block)

    def state_dict(self):
        s = {"ops": self.ops.clone(), "sizes": self.sizes.clone(), "length": self.length.clone(),
             "ptr": self.ptr.clone(), "seq_base": self.seq_base.clone()}
        if self.then is not None:
            s["then"] = self.then.state_dict()
        return s

    def load_state_dict(self, state):
        self.ops, self.sizes = state["ops"].clone(), state["sizes"].clone()
        self.length.copy_(state["length"])
        self.ptr.copy_(state["ptr"])
        if "seq_base" in state:  # absent in checkpoints from before FREE_SEQ
            self.seq_base.copy_(state["seq_base"])
        if self.then is not None:
            self.then.load_state_dict(state["then"])
