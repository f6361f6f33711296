"""Typed parameter schemas of the request streams: what ``make_stream`` accepts for each family.

Every stream class declares ``PARAMS``, a dict of parameter name -> ``Spec`` (a type with an explicit
conversion rule), next to its ``__init__``. ``make_stream`` parses the given parameters with it before the
stream is built, so a value of the wrong type fails with one message naming the stream, the parameter, the
value and the expected type, and an unknown name fails listing the valid ones. Ranges (``free_prob`` in
[0, 1), sizes within the heap, ...) stay the stream's own checks, which see all parameters together.

Conversion rules (nothing is truncated or guessed):

* ``INT``: an int, or a float with an integral value (``2.0``); ``2.5``, strings and bools fail;
* ``FLOAT``: an int or a float (not a bool, not a string);
* ``BOOL``: true / false; the integers 0 / 1; the strings true / false, yes / no, on / off, 1 / 0 (any case,
  which is how ``no`` arrives from a YAML file read as 1.2 or a quoted ``"false"``); anything else fails;
* ``STR``: a string; ``PATH``: a string or a path;
* ``list_of(spec)``: a list or tuple whose every item parses with ``spec``; ``optional(spec)``: None or
  ``spec``; ``one_of(a, b)``: the first of the specs that parses;
* ``checked(expected)``: a structured or closed-set value (a task list, ``[lo, hi]``, cell ranges, a choice)
  that the stream's constructor checks strictly itself, with a message that knows the domain ("target must
  name the rule that alone survives, ..."): passed through unchanged, listed here for the names and the docs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class _Mismatch(Exception):
    """Raised by a parser: the value is not of the spec's type."""


@dataclass(frozen=True)
class Spec:
    """A parameter type: ``expected`` says it in words, ``parse`` converts a value or raises ``_Mismatch``."""

    expected: str
    parse: Callable[[Any], Any]

    def __call__(self, value):
        return self.parse(value)


def _int(v):
    if isinstance(v, bool):
        raise _Mismatch
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iu":
        return int(v)
    raise _Mismatch


def _float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iuf":
            return float(v)
        raise _Mismatch
    return float(v)


def _bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return v.strip().lower() in TRUE_WORDS
    raise _Mismatch


def _str(v):
    if not isinstance(v, str):
        raise _Mismatch
    return v


def _path(v):
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return _str(v)


def _mapping(v):
    if not isinstance(v, Mapping):
        raise _Mismatch
    return dict(v)


INT = Spec("an integer", _int)
FLOAT = Spec("a number", _float)
BOOL = Spec("a boolean (true/false, yes/no, on/off or 0/1)", _bool)
STR = Spec("a string", _str)
PATH = Spec("a file path (a string)", _path)
MAPPING = Spec("a mapping", _mapping)
ANY = Spec("any value", lambda v: v)


def checked(expected: str) -> Spec:
    return Spec(expected, lambda v: v)


def choice(*values: str) -> Spec:
    def parse(v):
        if not isinstance(v, str) or v not in values:
            raise _Mismatch
        return v

    return Spec(f"one of {', '.join(values)}", parse)


def optional(spec: Spec) -> Spec:
    return Spec(f"{spec.expected} or null", lambda v: None if v is None else spec(v))


def list_of(spec: Spec, length: int | None = None) -> Spec:
    def parse(v):
        if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Sequence):
            raise _Mismatch
        if length is not None and len(v) != length:
            raise _Mismatch
        return [spec(x) for x in v]

    n = f"{length} " if length is not None else ""
    return Spec(f"a list of {n}items, each {spec.expected}", parse)


def one_of(*specs: Spec) -> Spec:
    def parse(v):
        for s in specs:
            try:
                return s(v)
            except _Mismatch:
                continue
        raise _Mismatch

    return Spec(" or ".join(s.expected for s in specs), parse)


def parse_params(stream: str, schema: Mapping[str, Spec], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` converted by ``schema``; an unknown name or a value of the wrong type is a ``ValueError``
    naming the stream and the parameter."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ValueError(f"stream {stream!r} has no parameter(s) {unknown}; valid: "
                         f"{', '.join(sorted(schema)) or 'none'}")
    out = {}
    for name, value in params.items():
        try:
            out[name] = schema[name](value)
        except _Mismatch:
            raise ValueError(f"stream {stream!r}: parameter {name}={value!r} must be {schema[name].expected}") from None
    return out


# Lim's random stream; every scripted family continues with it and takes the same parameters.
RANDOM_PARAMS: dict[str, Spec] = {"free_prob": FLOAT, "size_min": INT, "size_max": INT}
TASK_LIST = checked("a non-empty list of tasks {name, stream, params, ...}")  # checked by expand_tasks

__all__ = ["ANY", "BOOL", "FLOAT", "INT", "MAPPING", "PATH", "RANDOM_PARAMS", "STR", "TASK_LIST", "Spec", "checked",
           "choice", "list_of", "one_of", "optional", "parse_params"]
