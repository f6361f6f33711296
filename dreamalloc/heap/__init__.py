"""The allocator simulator: batched heap state, free runs, placement heuristics and metrics. No RL here."""

from dreamalloc.heap.heuristics import ALIGNS, RULES, choose_run, place_address
from dreamalloc.heap.metrics import METRICS, heap_metrics
from dreamalloc.heap.runs import FreeRuns
from dreamalloc.heap.state import HeapBatch

__all__ = ["ALIGNS", "METRICS", "RULES", "FreeRuns", "HeapBatch", "choose_run", "heap_metrics",
           "place_address"]
