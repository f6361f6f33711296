"""The allocator simulator: batched heap state, free runs, placement heuristics and metrics. No RL here."""

from dreamalloc.alloc.heap.heuristics import ALIGNS, RULES, choose_run, place_address
from dreamalloc.alloc.heap.metrics import METRICS, heap_metrics
from dreamalloc.alloc.heap.runs import FreeRuns
from dreamalloc.alloc.heap.state import HeapBatch

__all__ = ["ALIGNS", "METRICS", "RULES", "FreeRuns", "HeapBatch", "choose_run", "heap_metrics",
           "place_address"]
