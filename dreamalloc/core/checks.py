"""Declarative value checks of config nodes: a table of field -> ``Range`` / ``OneOf`` next to each dataclass.

A config dataclass (an agent's ``Config``, the harness's group schemas) declares ``RANGES: ClassVar[dict]``;
``check_node`` reads the tables of the class and its bases (a subclass adds or overrides entries) and raises
one ``ValueError`` ``config error: KEY=VALUE must be ...`` for the first value out of range. NaN is out of
every range; a field whose value is None (an optional setting left off) is not checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """lo <= v <= hi (``lo_open`` / ``hi_open``: strict); ``None`` ends are unbounded, but v must be finite
    unless ``finite=False``. ``each``: the value is a list and every item must lie in the range."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    each: bool = False
    finite: bool = True

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        text = " and ".join(parts) if parts else "a finite number"
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        return f"each {text}" if self.each else text

    def _ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        v = float(v)
        if math.isnan(v) or (self.finite and math.isinf(v)):
            return False
        if self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def error(self, v) -> str | None:
        """None when ``v`` is in range, else what it must be."""
        if self.each:
            items = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else [v]
            return None if all(self._ok(x) for x in items) else f"must be a list of numbers, {self.describe()}"
        return None if self._ok(v) else f"must be {self.describe()}"


@dataclass(frozen=True)
class OneOf:
    """A closed set of choices."""

    choices: tuple

    def error(self, v) -> str | None:
        return None if v in self.choices else f"must be one of {', '.join(map(str, self.choices))}"


def ge(lo: float) -> Range:
    return Range(lo=lo)


def gt(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(lo, hi, lo_open, hi_open)


UNIT = Range(0.0, 1.0)  # a probability, a discount, a fraction
FINITE = Range()
POSITIVE = gt(0.0)
COUNT = ge(1)  # sizes, batch sizes, lengths
NONNEG = ge(0)


def ranges_of(cls: type) -> dict[str, Range | OneOf]:
    """The merged ``RANGES`` tables of ``cls`` and its bases (the subclass's entries win)."""
    out: dict[str, Range | OneOf] = {}
    for base in reversed(getattr(cls, "__mro__", ())):
        out.update(base.__dict__.get("RANGES", {}) or {})
    return out


def check_node(prefix: str, node: Mapping[str, Any], cls: type) -> None:
    """Raise ``ValueError("config error: PREFIX.KEY=VALUE must be ...")`` for the first value of ``node`` that
    is out of the range its class declares."""
    for key, rule in ranges_of(cls).items():
        if key not in node:
            continue
        v = node[key]
        if v is None:
            continue
        if isinstance(v, Sequence) and not isinstance(v, str):
            v = list(v)
        msg = rule.error(v)
        if msg:
            raise ValueError(f"config error: {prefix}{key}={v!r} {msg}")


__all__ = ["COUNT", "FINITE", "NONNEG", "POSITIVE", "UNIT", "OneOf", "Range", "between", "check_node", "ge", "gt",
           "ranges_of"]
