"""Task lists and task distributions, for every env family.

A task is a named configuration of a family's randomness (``{name, stream, params, weight}``: an allocation
request stream, a load-balancing job law); an entry with ``ranges`` / ``choices`` is a task distribution that
expands, reproducibly, into ``samples`` concrete tasks. The families decide what ``stream`` and ``params`` mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TASK_KEYS = ("name", "stream", "params", "weight", "ranges", "choices", "samples", "seed")


def _sample_params(t: dict, i: int) -> dict:
    """Parameters ``params`` plus one draw (number ``i``) from the task's ``ranges`` ([lo, hi]: uniform;
    integers when both ends are integers) and ``choices`` (a list: one of its items), seeded by the task's
    ``seed`` and ``i`` so every run expands a task distribution into the same tasks."""
    rng = np.random.default_rng([int(t.get("seed", 0)), i, 0x7A5C])
    out = dict(t.get("params") or {})
    for key, r in sorted((t.get("ranges") or {}).items()):
        if not isinstance(r, Sequence) or isinstance(r, str) or len(r) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) or r[0] > r[1]:
            raise ValueError(f"task {t.get('name')!r}: range of {key!r} must be [lo, hi] with lo <= hi, got {r!r}")
        lo, hi = r
        out[key] = int(rng.integers(lo, hi + 1)) if isinstance(lo, int) and isinstance(hi, int) else float(
            rng.uniform(lo, hi))
    for key, c in sorted((t.get("choices") or {}).items()):
        if not isinstance(c, Sequence) or isinstance(c, str) or len(c) == 0:
            raise ValueError(f"task {t.get('name')!r}: choices of {key!r} must be a non-empty list, got {c!r}")
        out[key] = c[int(rng.integers(len(c)))]
    return out


def expand_tasks(tasks) -> list[dict]:
    """Concrete tasks {name, stream, params, weight} of a task list. An entry with ``ranges`` / ``choices``
    is a task distribution: it becomes ``samples`` tasks named NAME/0, NAME/1, ... (its weight shared
    among them), each with parameter values drawn from the ranges."""
    if not isinstance(tasks, Sequence) or isinstance(tasks, str) or len(tasks) == 0:
        raise ValueError(f"tasks must be a non-empty list of {{name, stream, params}} entries, got {tasks!r}")
    out = []
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping) or "stream" not in t:
            raise ValueError(f"task {i} must be a mapping with at least a 'stream' key, got {t!r}")
        unknown = sorted(set(t) - set(TASK_KEYS))
        if unknown:
            raise ValueError(f"task {i} has unknown key(s) {unknown}; valid: {', '.join(TASK_KEYS)}")
        name, weight = str(t.get("name") or t["stream"]), float(t.get("weight", 1.0))
        if t.get("ranges") or t.get("choices"):
            n = int(t.get("samples") or 0)
            if n < 1:
                raise ValueError(f"task {name!r} has ranges / choices, so it needs samples >= 1, got {n}")
            out += [{"name": f"{name}/{j}", "stream": str(t["stream"]), "params": _sample_params(t, j),
                     "weight": weight / n} for j in range(n)]
        else:
            out.append({"name": name, "stream": str(t["stream"]), "params": dict(t.get("params") or {}),
                        "weight": weight})
    return out


def check_tasks(tasks, streams: tuple[str, ...], what: str, task_obs: bool = False) -> list[dict]:
    """A family's task list expanded and checked: every task's stream is one of ``streams`` (the family's own),
    weights are >= 0 with a positive sum, and ``task_obs`` has several tasks to tell apart. A ValueError names the
    problem (``what`` names the env in the message)."""
    try:
        tasks = expand_tasks(list(tasks))
    except (ValueError, TypeError) as e:
        raise ValueError(f"tasks: {e}") from None
    for t in tasks:
        if t["stream"] not in streams:
            allowed = repr(streams[0]) if len(streams) == 1 else f"one of {', '.join(streams)}"
            raise ValueError(f"task {t['name']!r}: stream must be {allowed} for the {what}, got {t['stream']!r}")
        if t["weight"] < 0:
            raise ValueError(f"task {t['name']!r}: weight must be >= 0, got {t['weight']}")
    if sum(t["weight"] for t in tasks) <= 0:
        raise ValueError("task weights must have a positive sum")
    if task_obs and len(tasks) < 2:
        raise ValueError("task_obs needs several tasks")
    return tasks


__all__ = ["TASK_KEYS", "check_tasks", "expand_tasks"]
