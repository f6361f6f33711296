"""Counter-based random numbers, one independent stream per heap.

Why counter-based: heap ``b`` of a batched env must see exactly the stream that a single env seeded with
the same (seed, episode) sees, whatever else is in the batch. A keyed hash of (key, counter) gives that
with pure tensor ops, on CPU or GPU alike.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 value with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic), bit-exact with the reference."""
    z = x + _GOLDEN
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def splitmix64_int(x: int) -> int:
    """Plain-Python splitmix64, the reference the tensor version is tested against."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: torch.Tensor, episode: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Key of the stream of one (seed, episode) pair; ``salt`` separates uses of the same pair."""
    return splitmix64(splitmix64(seed.long() ^ _signed(salt * 0x632BE59BD9B4E019)) + episode.long())


class CounterRNG:
    """Uniform draws for B heaps: draw j of heap b is a hash of (key[b], j)."""

    def __init__(self, batch: int, device: torch.device | str = "cpu"):
        self.key = torch.zeros(batch, dtype=torch.long, device=device)
        self.counter = torch.zeros(batch, dtype=torch.long, device=device)

    def reseed(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, salt: int = 0) -> None:
        self.key[rows] = stream_key(seed, episode, salt)
        self.counter[rows] = 0

    def uniform(self, rows: torch.Tensor) -> torch.Tensor:
        """One float64 in [0, 1) per row; advances those rows' counters."""
        c = self.counter[rows]
        self.counter[rows] = c + 1
        z = splitmix64(self.key[rows] + c * _GOLDEN)
        return _srl(z, 11).double() * (1.0 / (1 << 53))

    def uniforms(self, rows: torch.Tensor, k: int) -> torch.Tensor:
        """[n, k] floats: the same numbers as k successive ``uniform`` calls, in one pass."""
        c = self.counter[rows]
        self.counter[rows] = c + k
        steps = c[:, None] + torch.arange(k, device=c.device)
        z = splitmix64(self.key[rows, None] + steps * _GOLDEN)
        return _srl(z, 11).double() * (1.0 / (1 << 53))

    def integers(self, rows: torch.Tensor, low: torch.Tensor | int, high: torch.Tensor | int) -> torch.Tensor:
        """Integers uniform in [low, high] (inclusive) per row."""
        u = self.uniform(rows)
        return (u * (torch.as_tensor(high) - low + 1)).long() + low

    def state_dict(self) -> dict:
        return {"key": self.key.clone(), "counter": self.counter.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.key.copy_(state["key"])
        self.counter.copy_(state["counter"])


def numpy_generator(seed: int, episode: int, salt: int = 0) -> np.random.Generator:
    """A numpy Generator for the per-episode scripts of one heap (built once per reset)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & _MASK64, int(episode), int(salt)]))
