"""Seeding, RNG snapshots and device choice: what makes a run repeatable and a resumed run continue exactly.

``seed_everything`` seeds the three global generators the code base draws from (Python ``random``,
numpy's global generator, torch's CPU and CUDA generators). ``rng_state`` / ``set_rng_state`` snapshot and
restore them, so a checkpoint taken at step t resumes with the same random draws as an uninterrupted run;
``rng_preserved`` puts them back after a block (scoring in the middle of training leaves training unchanged).
Environments own their generators (seeded through ``reset(seed=...)``) and are not covered here.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import warnings

import numpy as np
import torch

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def seed_everything(seed: int, deterministic_torch: bool = True) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device) from one integer.

    With ``deterministic_torch`` torch is asked for deterministic kernels (warning, not failing, for ops that
    have none) and cuDNN autotuning is off; ``CUBLAS_WORKSPACE_CONFIG`` is set when unset because CUDA
    matmuls are only deterministic with it. ``deterministic_torch=False`` switches all of that back off
    (faster on GPU). ``PYTHONHASHSEED`` cannot be changed from inside a running process and is not touched.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, if CUDA is not initialised yet)
    torch.cuda.manual_seed_all(seed)
    if deterministic_torch:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic_torch, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic_torch
    torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """A picklable snapshot of every global generator (store it in checkpoints)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore a snapshot from ``rng_state``; the next draws are those that followed the snapshot.

    CUDA states are restored for as many devices as both the snapshot and this machine have; a snapshot
    from a GPU machine restored on a CPU machine (or with a different GPU count) warns instead of failing,
    since the CPU-side draws are still reproduced.
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise ValueError(f"RNG state is missing {', '.join(missing)}; pass a dict made by rng_state()")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_states:
        if len(cuda_states) != have:
            warnings.warn(f"RNG state has {len(cuda_states)} CUDA generator(s) but this machine has {have} "
                          f"CUDA device(s); CUDA draws will differ from the original run", stacklevel=2)
        for i, s in enumerate(cuda_states[:have]):
            torch.cuda.set_rng_state(s.cpu(), device=i)


@contextlib.contextmanager
def rng_preserved():
    """Every global generator is where it was before the block, whatever the block drew (or raised)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def select_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked up front.

    A run asked to use a GPU that is not there stops here with the fix, not at the first tensor op.
    """
    key = str(name).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    m = _CUDA.match(key)
    if m is None:
        raise ValueError(f"unknown device {name!r}; choose one of auto|cpu|cuda (or cuda:N)")
    if not torch.cuda.is_available():
        raise ValueError(f"device={name} requested but no CUDA device is available; use device=cpu or device=auto")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ValueError(f"device={name} requested but only {torch.cuda.device_count()} CUDA device(s) exist "
                         f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1}); use device=cuda or device=auto")
    return torch.device(key)
