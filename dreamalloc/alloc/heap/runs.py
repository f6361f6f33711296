"""Maximal free runs of every heap, as one ragged table sorted by (heap, start address).

Why ragged: a heap of N cells has up to N/2 runs but usually a few dozen; keeping only the runs that exist
makes every placement rule a segment reduction over T runs instead of a scan over B * N cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

INF = torch.iinfo(torch.long).max


def _flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries; on CPU numpy's scan is several times faster than torch's nonzero."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


@dataclass(frozen=True)
class FreeRuns:
    heap: torch.Tensor  # [T] heap index of each run
    start: torch.Tensor  # [T] first free cell
    length: torch.Tensor  # [T] number of free cells (maximal: both neighbours occupied or the edge)
    offsets: torch.Tensor  # [B + 1] runs of heap b are rows offsets[b]:offsets[b + 1]
    cells: int

    @staticmethod
    def of(occ: torch.Tensor) -> FreeRuns:
        """Runs of a [B, N] occupancy map: one pass for the edges, ``nonzero`` for the list."""
        B, N = occ.shape
        ext = torch.ones((B, N + 2), dtype=torch.bool, device=occ.device)
        ext[:, 1:-1] = occ
        edges = _flatnonzero((ext[:, 1:] != ext[:, :-1]).view(-1))  # alternate run start / end
        begin, end = edges[0::2], edges[1::2]
        heap = torch.div(begin, N + 1, rounding_mode="floor")
        counts = torch.bincount(heap, minlength=B)
        offsets = torch.nn.functional.pad(torch.cumsum(counts, 0), (1, 0))
        return FreeRuns(heap, begin - heap * (N + 1), end - begin, offsets, N)

    @property
    def batch(self) -> int:
        return self.offsets.numel() - 1

    # reductions per heap -------------------------------------------------------------------------
    def _reduce(self, values: torch.Tensor, how: str, fill: int) -> torch.Tensor:
        out = torch.full((self.batch,), fill, dtype=torch.long, device=self.start.device)
        return out.scatter_reduce_(0, self.heap, values, how, include_self=True)

    def segment_min(self, values: torch.Tensor) -> torch.Tensor:
        """Minimum of a per-run value in each heap (INF for a heap with no runs)."""
        return self._reduce(values, "amin", INF)

    def counts(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def largest(self) -> torch.Tensor:
        return self._reduce(self.length, "amax", 0)

    def free_cells(self) -> torch.Tensor:
        return self._reduce(self.length, "sum", 0)

    # queries given a request size per heap -------------------------------------------------------
    def fitting(self, size: torch.Tensor) -> torch.Tensor:
        """[T] bool: the run can hold the request of its heap."""
        return self.length >= size[self.heap]

    def rank(self, mask: torch.Tensor) -> torch.Tensor:
        """[T] 1-based rank of each masked run among the masked runs of its heap, in address order."""
        c = torch.cumsum(mask.long(), 0)
        before = torch.nn.functional.pad(c, (1, 0))[self.offsets[:-1]]
        return c - before[self.heap]

    def n_fitting(self, size: torch.Tensor) -> torch.Tensor:
        return self._reduce(self.fitting(size).long(), "sum", 0)

    def kth_fitting(self, size: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Start of the k-th (0-based) run that fits, in address order; -1 where there is none."""
        fits = self.fitting(size)
        hit = fits & (self.rank(fits) == k[self.heap] + 1)
        s = self.segment_min(torch.where(hit, self.start, INF))
        return torch.where(s == INF, -1, s)

    def first_fitting(self, size: torch.Tensor, n: int, by_size: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and length of the first ``n`` runs that fit each request: [B, n] each, zeros past the end. In
        address order, or with ``by_size`` shortest first (ties: lower address first), so the first is best fit's."""
        fits = self.fitting(size)
        if by_size:  # rank by (heap, fits first, length, start): one sort, then the position within the heap
            N1 = self.cells + 1
            key = self.heap * (2 * N1 * N1) + torch.where(fits, self.length * N1 + self.start, N1 * N1 + self.start)
            order = torch.argsort(key)
            r = torch.empty_like(order)
            r[order] = torch.arange(1, order.numel() + 1, device=order.device) - self.offsets[self.heap[order]]
        else:
            r = self.rank(fits)
        keep = fits & (r <= n)
        start = torch.zeros((self.batch, n), dtype=torch.long, device=self.start.device)
        length = torch.zeros_like(start)
        h, col = self.heap[keep], r[keep] - 1
        start[h, col] = self.start[keep]
        length[h, col] = self.length[keep]
        return start, length

    def window_free(self, address: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """[B] bool: cells [address, address + size) of each heap are all free."""
        a, s = address[self.heap], size[self.heap]
        inside = (self.start <= a) & (self.start + self.length >= a + s)
        return self._reduce(inside.long(), "amax", 0).bool()

    def address_mask(self, size: torch.Tensor) -> torch.Tensor:
        """[B, N] bool: the valid start addresses of each heap's request (a difference array per heap)."""
        B, N = self.batch, self.cells
        fits = self.fitting(size)
        h, st = self.heap[fits], self.start[fits]
        last = st + self.length[fits] - size[h]  # last valid start inside the run
        diff = torch.zeros((B, N + 1), dtype=torch.int32, device=self.start.device)
        ones = torch.ones_like(h, dtype=torch.int32)
        diff.index_put_((h, st), ones, accumulate=True)
        diff.index_put_((h, last + 1), -ones, accumulate=True)
        return torch.cumsum(diff[:, :N], 1) > 0

    def emptied(self, mask: torch.Tensor) -> FreeRuns:
        """The runs after the heaps in ``mask`` [B] were emptied: one run (0, N) each, others unchanged."""
        keep = ~mask[self.heap]
        counts = torch.where(mask, 1, self.counts())
        offsets = torch.nn.functional.pad(torch.cumsum(counts, 0), (1, 0))
        T = int(offsets[-1])
        dev = self.start.device
        heap = torch.empty(T, dtype=torch.long, device=dev)
        start = torch.empty_like(heap)
        length = torch.empty_like(heap)
        idx = torch.arange(self.heap.numel(), device=dev)
        dest = (offsets[self.heap] + idx - self.offsets[self.heap])[keep]
        heap[dest], start[dest], length[dest] = self.heap[keep], self.start[keep], self.length[keep]
        rows = mask.nonzero().squeeze(1)
        heap[offsets[rows]], start[offsets[rows]], length[offsets[rows]] = rows, 0, self.cells
        return FreeRuns(heap, start, length, offsets, self.cells)
