"""Batched heap state: B heaps of N cells, held as tensors on one device.

Every mutation touches only the cells and table entries it changes (O(cells written), not O(B * N)), so
the env's hot path scales with the requests, not the heap size. The free-run view lives in ``runs.py``.
"""

from __future__ import annotations

import torch

Rows = torch.Tensor  # [n] int64 heap indices, distinct


def _as_rows(heaps: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    if heaps is None:
        return torch.arange(batch, device=device)
    rows = torch.as_tensor(heaps, dtype=torch.long, device=device).reshape(-1)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= batch):
        raise ValueError(f"heap index out of range: heaps must lie in [0, {batch - 1}], got {rows.tolist()}")
    if rows.unique().numel() != rows.numel():
        raise ValueError(f"heap indices must be distinct in one call, got {rows.tolist()}")
    return rows


def _per_row(value, n: int, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1 and n != 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must have one value per heap ({n}), got {t.numel()}")
    return t


class HeapBatch:
    """B heaps of N cells: occupancy, owner of each cell, and a table of live blocks.

    A block is named by its slot in the table (``0 .. N-1``; each heap holds at most N live blocks).
    ``block_seq`` is the allocation ordinal of a block within the episode, so "oldest" is well defined.
    Live slots are kept in the first ``n_live`` entries of the permutation ``perm`` (free slots after
    them), which makes picking a uniformly random live block and freeing it O(1).
    """

    def __init__(self, batch: int, cells: int, device: torch.device | str = "cpu"):
        if int(batch) < 1:
            raise ValueError(f"batch (number of heaps) must be >= 1, got {batch}")
        if int(cells) < 2:
            raise ValueError(f"cells (heap size N) must be >= 2, got {cells}")
        B, N = int(batch), int(cells)
        d = torch.device(device)
        self.batch, self.cells, self.device = B, N, d
        self.owner = torch.full((B, N), -1, dtype=torch.int32, device=d)  # slot owning each cell, -1 free
        self.occ = torch.zeros((B, N), dtype=torch.bool, device=d)
        self.block_start = torch.zeros((B, N), dtype=torch.long, device=d)
        self.block_size = torch.zeros((B, N), dtype=torch.long, device=d)
        self.block_seq = torch.full((B, N), -1, dtype=torch.long, device=d)
        self.live = torch.zeros((B, N), dtype=torch.bool, device=d)
        self.perm = torch.arange(N, device=d).repeat(B, 1)  # [B, M]: live slots first
        self.pos = self.perm.clone()  # inverse of perm
        self.n_live = torch.zeros(B, dtype=torch.long, device=d)
        self.used = torch.zeros(B, dtype=torch.long, device=d)  # live cells
        self.n_allocs = torch.zeros(B, dtype=torch.long, device=d)  # successful allocations since reset
        self.n_dropped = torch.zeros(B, dtype=torch.long, device=d)  # requests dropped since reset (on_fail=drop)
        self.rover = torch.zeros(B, dtype=torch.long, device=d)  # next-fit roving pointer
        self.version = 0  # bumped on every mutation; caches of derived views key on it
        self._ar = torch.arange(N, device=d)

    # ----------------------------------------------------------------------------------------------
    # internal, unchecked operations on distinct rows (the env's hot path)
    # ----------------------------------------------------------------------------------------------
    def _cells_of(self, rows: Rows, start: torch.Tensor, size: torch.Tensor):
        """Flat (row, column) indices of the cells [start, start + size) of each row."""
        total = int(size.sum())  # output_size spares repeat_interleave a second pass and a sync
        rr = torch.repeat_interleave(rows, size, output_size=total)
        base = torch.repeat_interleave(start - (torch.cumsum(size, 0) - size), size, output_size=total)
        return rr, base + torch.arange(total, device=self.device)

    def _place(self, rows: Rows, start: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """Allocate ``size`` cells at ``start`` in each row (the window must be free); returns the slots."""
        if rows.numel() == 0:
            return rows
        k = self.n_live[rows]
        slot = self.perm[rows, k]
        self.n_live[rows] = k + 1
        self.block_start[rows, slot] = start
        self.block_size[rows, slot] = size
        self.block_seq[rows, slot] = self.n_allocs[rows] + self.n_dropped[rows]
        self.live[rows, slot] = True
        self.n_allocs[rows] += 1
        self.used[rows] += size
        self.rover[rows] = (start + size) % self.cells
        rr, cc = self._cells_of(rows, start, size)
        self.owner[rr, cc] = torch.repeat_interleave(slot, size, output_size=rr.numel()).int()
        self.occ[rr, cc] = True
        self.version += 1
        return slot

    def _release(self, rows: Rows, slot: torch.Tensor) -> None:
        """Free the live block ``slot`` of each row; the neighbouring free cells coalesce by construction."""
        if rows.numel() == 0:
            return
        start, size = self.block_start[rows, slot], self.block_size[rows, slot]
        rr, cc = self._cells_of(rows, start, size)
        self.owner[rr, cc] = -1
        self.occ[rr, cc] = False
        self.live[rows, slot] = False
        self.block_seq[rows, slot] = -1
        self.used[rows] -= size
        p = self.pos[rows, slot]
        k = self.n_live[rows] - 1
        last = self.perm[rows, k]
        self.perm[rows, p] = last
        self.pos[rows, last] = p
        self.perm[rows, k] = slot
        self.pos[rows, slot] = k
        self.n_live[rows] = k
        self.version += 1

    def _clear(self, rows: Rows) -> None:
        """Free every block of the rows (the allocation count and rover stay: a free-all request)."""
        if rows.numel() == 0:
            return
        self.owner[rows] = -1
        self.occ[rows] = False
        self.live[rows] = False
        self.block_seq[rows] = -1
        self.n_live[rows] = 0
        self.used[rows] = 0
        self.version += 1

    def _reset(self, rows: Rows) -> None:
        self._clear(rows)
        self.n_allocs[rows] = 0
        self.n_dropped[rows] = 0
        self.rover[rows] = 0

    def _drop(self, rows: Rows) -> None:
        """Count a dropped allocation request in each row (the request clock moves on, nothing is placed)."""
        self.n_dropped[rows] += 1

    def clock(self, rows: Rows) -> torch.Tensor:
        """The request clock of the rows: allocation requests since reset, placed or dropped (``n_allocs`` when
        nothing is ever dropped). A block's ``block_seq`` is the clock at its placement; streams count time in it."""
        return self.n_allocs[rows] + self.n_dropped[rows]

    def _oldest(self, rows: Rows) -> torch.Tensor:
        """Slot of the oldest live block of each row, -1 where the heap is empty."""
        seq = torch.where(self.live[rows], self.block_seq[rows], torch.iinfo(torch.long).max)
        slot = seq.argmin(1)
        return torch.where(self.n_live[rows] > 0, slot, -1)

    def _compact(self, rows: Rows) -> None:
        """Slide every live block of the rows to the left, keeping their order and slots.

        The ideal (compacting) allocator behind the capacity bound: after it, all free cells form one run.
        """
        if rows.numel() == 0:
            return
        live = self.live[rows]
        key = torch.where(live, self.block_start[rows], self.cells + 1)
        order = key.argsort(1)
        size_sorted = torch.where(live, self.block_size[rows], 0).gather(1, order)
        new_sorted = torch.cumsum(size_sorted, 1) - size_sorted
        new_start = torch.empty_like(new_sorted).scatter_(1, order, new_sorted)
        self.block_start[rows] = torch.where(live, new_start, self.block_start[rows])
        self.owner[rows] = -1
        self.occ[rows] = False
        r_idx, s_idx = live.nonzero(as_tuple=True)
        hr = rows[r_idx]
        st, sz = self.block_start[hr, s_idx], self.block_size[hr, s_idx]
        rr, cc = self._cells_of(hr, st, sz)
        self.owner[rr, cc] = torch.repeat_interleave(s_idx, sz, output_size=rr.numel()).int()
        self.occ[rr, cc] = True
        self.rover[rows] = self.used[rows] % self.cells
        self.version += 1

    # ----------------------------------------------------------------------------------------------
    # public, validated operations
    # ----------------------------------------------------------------------------------------------
    def check_size(self, size: torch.Tensor) -> None:
        if size.numel() and (int(size.min()) < 1 or int(size.max()) > self.cells):
            bad = size[(size < 1) | (size > self.cells)][0].item()
            raise ValueError(f"request size must lie in [1, {self.cells}] (the heap size), got {bad}")

    def allocate(self, address, size, heaps=None) -> torch.Tensor:
        """Allocate ``size`` cells at ``address`` in each given heap; returns a bool per heap: False where
        the window is not entirely free or runs past the end (nothing changes there)."""
        rows = _as_rows(heaps, self.batch, self.device)
        addr = _per_row(address, rows.numel(), "address", self.device)
        size = _per_row(size, rows.numel(), "size", self.device)
        self.check_size(size)
        if addr.numel() and (int(addr.min()) < 0 or int(addr.max()) >= self.cells):
            bad = addr[(addr < 0) | (addr >= self.cells)][0].item()
            raise ValueError(f"address must lie in [0, {self.cells - 1}], got {bad}")
        end = addr + size
        inside = end <= self.cells
        csum = torch.nn.functional.pad(torch.cumsum(self.occ[rows].long(), 1), (1, 0))
        taken = csum.gather(1, end.clamp(max=self.cells)[:, None]) - csum.gather(1, addr[:, None])
        ok = inside & (taken.squeeze(1) == 0)
        self._place(rows[ok], addr[ok], size[ok])
        return ok

    def free(self, block, heaps=None) -> None:
        """Free block ``block`` (a slot id returned by ``allocate`` / listed by ``blocks``) in each heap."""
        rows = _as_rows(heaps, self.batch, self.device)
        slot = _per_row(block, rows.numel(), "block", self.device)
        bad = (slot < 0) | (slot >= self.cells)
        bad[~bad] = ~self.live[rows[~bad], slot[~bad]]
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"block {int(slot[i])} is not live in heap {int(rows[i])}; nothing was freed")
        self._release(rows, slot)

    def free_all(self, heaps=None) -> None:
        self._clear(_as_rows(heaps, self.batch, self.device))

    def reset(self, heaps=None) -> None:
        """Empty the heaps and restart their allocation counters and next-fit rovers."""
        self._reset(_as_rows(heaps, self.batch, self.device))

    def compact(self, heaps=None) -> None:
        self._compact(_as_rows(heaps, self.batch, self.device))

    def blocks(self, heap: int) -> list[tuple[int, int, int]]:
        """Live blocks of one heap as (slot, start, size), sorted by address."""
        slots = self.live[heap].nonzero().squeeze(1)
        out = [(int(s), int(self.block_start[heap, s]), int(self.block_size[heap, s])) for s in slots]
        return sorted(out, key=lambda b: b[1])

    def state_dict(self) -> dict:
        names = ("owner", "occ", "block_start", "block_size", "block_seq", "live", "perm", "pos", "n_live",
                 "used", "n_allocs", "n_dropped", "rover")
        return {n: getattr(self, n).clone() for n in names}

    def load_state_dict(self, state: dict) -> None:
        for n, v in state.items():
            cur = getattr(self, n)
            if cur.shape != v.shape:
                raise ValueError(f"heap state {n!r} has shape {tuple(v.shape)}, expected {tuple(cur.shape)}")
            cur.copy_(v)
        self.version += 1
