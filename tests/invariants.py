"""Heap invariants shared by the workload tests: every stream must keep them whatever it requests."""

import torch


def check_heaps(h) -> None:
    """Block table, owner map, occupancy and counters agree, and no two live blocks overlap."""
    live = h.live
    assert torch.equal(h.used, torch.where(live, h.block_size, 0).sum(1))
    assert torch.equal(h.occ.sum(1), h.used)  # the cells owned add up: no two blocks overlap
    assert torch.equal(h.n_live, live.sum(1))
    for b in range(h.batch):
        slots = live[b].nonzero().squeeze(1)
        cover = torch.zeros(h.cells, dtype=torch.long)
        for s in slots.tolist():
            st, sz = int(h.block_start[b, s]), int(h.block_size[b, s])
            cover[st: st + sz] += 1
            assert bool((h.owner[b, st: st + sz] == s).all())
        assert int(cover.max()) <= 1
