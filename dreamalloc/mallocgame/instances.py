"""Instances of the memory-mapping game: the buffers of one program and the fast memory they compete for.

An instance is ``{name, capacity, buffers: [[start, end, size, benefit], ...], meta}``: time is an index into
the program's schedule (one step per operation), a buffer is live over ``[start, end)``, occupies ``size``
contiguous units of address space (bytes for recorded programs) and is worth ``benefit`` when it lives in the
fast memory of ``capacity`` units. ``make_instance`` checks one and orders its buffers the way the game places
them: by start time, larger first among buffers that start together, then by their given index.

The recorded programs ship in ``data/programs.json.gz`` (written by ``scripts/mallocgame_record.py``; its
``provenance`` entry names the command); ``load_programs`` reads them and ``program_set`` selects a named set.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "programs.json.gz"
FORMAT = "dreamalloc.mallocgame/1"
SETS = ("train", "heldout_models", "heldout_batch", "all")


class InstanceError(ValueError):
    """An instance the game cannot be played on; the message names the instance, the buffer and the problem."""


@dataclass(frozen=True)
class Instance:
    name: str
    capacity: int
    start: np.ndarray  # int64 [n], in game order
    end: np.ndarray  # int64 [n], exclusive
    size: np.ndarray  # int64 [n]
    benefit: np.ndarray  # float64 [n]
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def n(self) -> int:
        return int(self.size.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.end.max())

    @property
    def total_benefit(self) -> float:
        return float(self.benefit.sum())

    def overlapping_pairs(self) -> np.ndarray:
        """[m, 2] index pairs (i < j) of buffers live at the same time."""
        s, e = self.start, self.end
        both = (s[:, None] < e[None, :]) & (s[None, :] < e[:, None])
        i, j = np.nonzero(np.triu(both, 1))
        return np.stack([i, j], 1)

    def peak_live(self) -> int:
        """The largest total size of the buffers live at one time (what a memory without reuse limits needs)."""
        delta = np.zeros(self.horizon + 1, np.int64)
        np.add.at(delta, self.start, self.size)
        np.add.at(delta, self.end, -self.size)
        return int(np.cumsum(delta).max())

    def to_json(self) -> dict:
        return {"name": self.name, "capacity": int(self.capacity),
                "buffers": [[int(a), int(b), int(c), float(d)] for a, b, c, d in
                            zip(self.start, self.end, self.size, self.benefit, strict=True)], "meta": dict(self.meta)}


def _int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def make_instance(name: str, capacity, buffers, meta: dict | None = None) -> Instance:
    """A checked ``Instance``: ``buffers`` is a sequence of ``[start, end, size, benefit]``. One
    ``InstanceError`` names the first problem: a capacity that is not an integer > 0, no buffers, a buffer that
    is not four numbers, a negative start, an empty live range (end <= start), a size that is not an integer
    > 0, a buffer larger than the fast memory, a negative or non-finite benefit."""
    where = f"instance {name!r}"
    if not _int(capacity) or capacity <= 0:
        raise InstanceError(f"{where}: capacity must be an integer > 0, got {capacity!r}")
    if isinstance(buffers, (str, bytes)) or not hasattr(buffers, "__len__") or len(buffers) == 0:
        raise InstanceError(f"{where}: needs a non-empty list of [start, end, size, benefit] buffers, got {buffers!r}")
    rows = []
    for i, b in enumerate(buffers):
        if isinstance(b, (str, bytes)) or not hasattr(b, "__len__") or len(b) != 4:
            raise InstanceError(f"{where}: buffer {i} must be [start, end, size, benefit], got {b!r}")
        start, end, size, benefit = b
        if not (_int(start) and _int(end)):
            raise InstanceError(f"{where}: buffer {i} has a non-integer live range [{start!r}, {end!r})")
        if start < 0:
            raise InstanceError(f"{where}: buffer {i} starts at a negative time {start}")
        if end <= start:
            raise InstanceError(f"{where}: buffer {i} has an empty live range [{start}, {end}) (end must be > start)")
        if not _int(size) or size <= 0:
            raise InstanceError(f"{where}: buffer {i} has size {size!r}; sizes must be integers > 0")
        if size > capacity:
            raise InstanceError(f"{where}: buffer {i} of size {size} is larger than the fast memory "
                                f"(capacity {capacity})")
        if isinstance(benefit, bool) or not isinstance(benefit, (int, float, np.integer, np.floating)) or not (
                math.isfinite(benefit) and benefit >= 0):
            raise InstanceError(f"{where}: buffer {i} has benefit {benefit!r}; benefits must be finite numbers >= 0")
        rows.append((int(start), int(end), int(size), float(benefit)))
    arr = np.array([r[:3] for r in rows], np.int64)
    ben = np.array([r[3] for r in rows], np.float64)
    order = np.lexsort((np.arange(len(rows)), -arr[:, 2], arr[:, 0]))  # start, then larger size, then index
    arr, ben = arr[order], ben[order]
    return Instance(str(name), int(capacity), arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), ben.copy(),
                    dict(meta or {}))


def from_json(d: dict) -> Instance:
    if not isinstance(d, dict) or "capacity" not in d or "buffers" not in d:
        raise InstanceError(f"an instance must be a mapping with 'capacity' and 'buffers', got {str(d)[:80]}")
    return make_instance(d.get("name", "unnamed"), d["capacity"], d["buffers"], d.get("meta"))


def load_programs(path: Path | str = DATA) -> tuple[list[Instance], dict]:
    """The recorded programs and the file's provenance."""
    with gzip.open(path, "rt") as f:
        doc = json.load(f)
    if doc.get("format") != FORMAT:
        raise InstanceError(f"{path}: not a mallocgame instance file (format {doc.get('format')!r}, want {FORMAT})")
    return [from_json(d) for d in doc["instances"]], doc.get("provenance", {})


_CACHE: dict[str, list[Instance]] = {}


def program_set(name: str, models=None, batches=None) -> list[Instance]:
    """The recorded instances of a set: ``train`` (the training models at the training batch sizes),
    ``heldout_models`` (models never trained on), ``heldout_batch`` (training models at larger batch sizes) or
    ``all``; optionally only the given ``models`` / ``batches``."""
    if name not in SETS:
        raise ValueError(f"unknown program set {name!r}; choose one of {', '.join(SETS)}")
    if "programs" not in _CACHE:
        _CACHE["programs"] = load_programs()[0]
    out = [i for i in _CACHE["programs"] if name == "all" or i.meta.get("split") == name]
    if models is not None:
        out = [i for i in out if i.meta.get("model") in set(models)]
    if batches is not None:
        out = [i for i in out if i.meta.get("batch") in set(batches)]
    if not out:
        raise ValueError(f"program set {name!r} has no instances for models={models} batches={batches}")
    return out


__all__ = ["DATA", "FORMAT", "SETS", "Instance", "InstanceError", "from_json", "load_programs", "make_instance",
           "program_set"]
