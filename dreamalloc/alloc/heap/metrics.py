"""Per-heap metrics, reported by the envs at every step and by the evaluation tables."""

from __future__ import annotations

import torch

from dreamalloc.alloc.heap.runs import FreeRuns
from dreamalloc.alloc.heap.state import HeapBatch

METRICS = ("allocations", "free_cells", "largest_free", "free_runs", "frag_largest", "frag_runs",
           "utilisation")


def heap_metrics(heaps: HeapBatch, runs: FreeRuns) -> dict[str, torch.Tensor]:
    """frag_largest = 1 - largest_free / free_cells (0 when nothing is free);
    frag_runs = Mandal & Rohil's (number of free runs) / N clipped to [0, 1], 0 when the heap is
    completely free or completely full."""
    N = heaps.cells
    free = N - heaps.used
    largest = runs.largest()
    n_runs = runs.counts()
    frag_largest = torch.where(free > 0, 1.0 - largest / free.clamp(min=1), 0.0)
    partial = (free > 0) & (free < N)
    frag_runs = torch.where(partial, (n_runs / N).clamp(0.0, 1.0), 0.0)
    return {
        "allocations": heaps.n_allocs.clone(),
        "free_cells": free,
        "largest_free": largest,
        "free_runs": n_runs,
        "frag_largest": frag_largest.float(),
        "frag_runs": frag_runs.float(),
        "utilisation": (heaps.used / N).float(),
    }
