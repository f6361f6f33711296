"""Checking the actions handed to ``step()``: one clear error for a wrong type, dtype, shape or value.

Every env of the package (the batched cores ``AllocCore``, ``LoadBalanceCore``, the meta-task cores, the
gymnasium faces over them and ``GymVecCore``) takes a Discrete action per row, so they share one check.
A batched step takes an integer tensor or array of shape ``(B,)`` (any integer dtype, on any device; numpy
arrays and lists of ints are converted); a single env takes one integer (a Python int, a numpy integer, or
an array / tensor of one element). Refused, with an ``ActionError`` that says what was given and what is
expected: ``None``, strings, floats (even integral ones such as 1.0: gymnasium's ``Discrete.contains``
refuses them too), bools, complex numbers, object arrays, a shape other than ``(B,)`` (a ``(2, 2)`` array
for 4 rows is an error, not 4 actions) and values outside ``[0, n)``; nothing is clipped or cast silently.

Cost: the fast path (an integer tensor of the right shape on the core's device) is a dtype and shape
look-up plus one ``aminmax`` reduction read back in one transfer (a few microseconds per step on CPU,
one device sync on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.uint16, torch.uint32,
               torch.uint64)


class ActionError(ValueError, TypeError):
    """An action ``step()`` cannot take (wrong type, dtype, shape or value). A ``ValueError`` (and a
    ``TypeError``, so code catching either sees it); the message names the problem and what is expected."""


def _describe(action) -> str:
    """What was given, briefly: its type, and dtype / shape / a few values for arrays."""
    if action is None:
        return "None"
    if isinstance(action, torch.Tensor):
        head = action.flatten()[:4].tolist()
        return f"a torch tensor of dtype {action.dtype} and shape {tuple(action.shape)} (first values {head})"
    if isinstance(action, np.ndarray):
        head = action.reshape(-1)[:4].tolist()
        return f"a numpy array of dtype {action.dtype} and shape {action.shape} (first values {head})"
    if isinstance(action, str | bytes):
        return f"the string {action!r}"
    text = repr(action)
    return f"{type(action).__name__} {text[:60] + '...' if len(text) > 60 else text}"


class ActionSpec:
    """What one env's ``step()`` takes: ``batch`` rows (``None``: a single env, one integer) of Discrete(n).

    ``space`` names the action space in messages (e.g. "the heuristic action space") and ``names`` (optional)
    the meaning of each index, so a string such as ``"best"`` gets a hint naming its index."""

    def __init__(self, n: int, batch: int | None, device="cpu", unit: str = "env", space: str = "",
                 names: Sequence[str] = ()):
        self.n, self.batch, self.unit = int(n), batch, unit
        self.device = torch.device(device)
        self.space = space or f"Discrete({self.n})"
        self.names = tuple(names)

    def expected(self) -> str:
        vals = f"values in [0, {self.n - 1}]" if self.n > 1 else "the value 0"
        legend = ""
        if self.names:
            legend = " (" + ", ".join(f"{i} = {name}" for i, name in enumerate(self.names)) + ")"
        if self.batch is None:
            return f"one integer in [0, {self.n - 1}] of {self.space}{legend}"
        return (f"an integer tensor or array of shape ({self.batch},), one action per {self.unit}, with {vals} "
                f"of {self.space}{legend}")

    def fail(self, action, problem: str) -> ActionError:
        hint = ""
        if isinstance(action, str) and action in self.names:
            hint = f"; {action!r} is action {self.names.index(action)}, pass that index"
        return ActionError(f"invalid action: {problem}; got {_describe(action)}. Expected {self.expected()}{hint}")

    # ----------------------------------------------------------------------------------------------
    def __call__(self, action) -> torch.Tensor:
        """The actions as an int64 tensor of shape ``(batch,)`` (``(1,)`` for a single env) on ``device``."""
        a = action
        # the common case, checked cheaply: int64 actions on the CPU, from a vector env (numpy) or a core's caller
        x = a if type(a) is np.ndarray and a.dtype == np.int64 else \
            a.numpy() if type(a) is torch.Tensor and a.dtype == torch.long and a.device.type == "cpu" else None
        if x is not None and self.device.type == "cpu" and x.shape == (self.batch,) and x.size and 0 <= x.min() \
                and x.max() < self.n:
            return a if x is not a else torch.from_numpy(np.ascontiguousarray(a))
        if isinstance(a, list | tuple):  # a list of ints: through numpy, which names a ragged or mixed list
            try:
                a = np.asarray(a)
            except ValueError:
                raise self.fail(action, "a list of actions must be a flat list of integers") from None
        if isinstance(a, torch.Tensor):
            if a.dtype not in _INT_DTYPES:
                raise self.fail(action, f"actions must be integers, not {a.dtype}")
        elif isinstance(a, np.ndarray | np.generic):
            if a.dtype.kind not in "iu":
                raise self.fail(action, f"actions must be integers, not numpy {a.dtype}")
            arr = np.asarray(a).astype(np.int64, copy=False)
            a = torch.from_numpy(np.ascontiguousarray(arr) if arr.ndim else arr.reshape(()).copy())
        elif isinstance(a, int) and not isinstance(a, bool):
            a = torch.tensor(a, dtype=torch.long)
        else:
            raise self.fail(action, f"{type(action).__name__} is not an integer action")
        if self.batch is None:
            if a.numel() != 1 or a.ndim > 1:
                raise self.fail(action, f"a single env takes one action, not shape {tuple(a.shape)}")
            a = a.reshape(1)
        elif a.ndim != 1 or a.shape[0] != self.batch:
            raise self.fail(action, f"expected {self.batch} actions (one per {self.unit}) in shape ({self.batch},), "
                                    f"got shape {tuple(a.shape)}")
        if a.device != self.device:
            a = a.to(self.device)
        if a.dtype != torch.long:
            a = a.long()
        if a.numel():
            lo, hi = torch.stack(torch.aminmax(a)).tolist()
            if lo < 0 or hi >= self.n:
                bad = ((a < 0) | (a >= self.n)).nonzero()[0, 0]
                where = "" if self.batch is None else f" (row {int(bad)})"
                raise self.fail(action, f"action {int(a[bad])}{where} is out of range")
        return a


__all__ = ["ActionError", "ActionSpec"]
