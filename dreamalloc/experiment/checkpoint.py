"""Atomic checkpoints, so a killed run resumes where it stopped and never from a half-written file.

A checkpoint is one ``torch.save``d dict: whatever the trainer puts in it (network and optimiser state,
step counters, RNG states, the resolved config) plus ``format_version``. By convention ``payload["meta"]``
holds what must match for the checkpoint to be usable (agent name, observation size, number of actions);
``load_checkpoint(..., expected=...)`` checks it and says which value differs, instead of failing later
with a shape error deep inside torch.

Files are named ``ckpt_{step:012d}.pt`` so that names sort by step and ``latest_checkpoint`` is trivial.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, too new, or written for a different run set-up."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus ``format_version``) to ``path`` atomically and return the path.

    The data goes to a temporary file in the same directory, is flushed and fsynced, then renamed onto
    ``path`` (``os.replace`` is atomic on POSIX and Windows). A crash at any point leaves either the old
    checkpoint or the new one, never a torn file; on an exception the temporary file is removed.
    The caller's dict is not modified.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({**payload, "format_version": FORMAT_VERSION}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, expected: dict | None = None, map_location="cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint``; raise ``CheckpointError`` with the fix if unusable.

    ``expected`` maps keys of ``payload["meta"]`` to the values this run needs (e.g.
    ``{"agent": "dqn", "obs_dim": 257, "n_actions": 3}``); every mismatch is reported in one message.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (latest_checkpoint(dir) "
                              f"finds the newest in a directory)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file; pass a ckpt_*.pt file or use "
                              f"latest_checkpoint({str(path)!r})")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, garbage bytes, pickle of a class that no longer exists, ...
        raise CheckpointError(f"checkpoint {path} could not be read (truncated, corrupt or not a checkpoint): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a dreamalloc checkpoint (no format_version); "
                              f"it was not written by save_checkpoint")
    version = payload["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version!r} but this dreamalloc reads "
                              f"versions up to {FORMAT_VERSION}; upgrade dreamalloc to load it")
    if expected:
        check_meta(path, payload.get("meta"), expected)
    return payload


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``directory/ckpt_{step:012d}.pt``: zero-padded so that names sort by step."""
    step = int(step)
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return Path(directory) / f"ckpt_{step:012d}.pt"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The ``ckpt_*.pt`` file with the largest step in ``directory``, or None (also if it does not exist)."""
    found = _checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``ckpt_*.pt`` files (by step); ``keep=0`` keeps every one. Other files
    are left alone."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0 (0: keep every checkpoint), got {keep}")
    if keep == 0:
        return
    found = _checkpoints(directory)
    for old in found[:max(len(found) - keep, 0)]:
        old.unlink(missing_ok=True)


def _checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files sorted by step, oldest first; temporary files never match the name pattern."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for p in directory.glob("ckpt_*.pt"):
        m = _NAME.match(p.name)
        if m and p.is_file():
            steps.append((int(m.group(1)), p))
    return [p for _, p in sorted(steps)]


def check_meta(path: Path, meta, expected: dict) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has no 'meta' section, so it cannot be checked against "
                              f"{', '.join(f'{k}={v!r}' for k, v in expected.items())}; use a checkpoint "
                              f"written by this version of the trainer")
    missing = object()
    problems = []
    for key, want in expected.items():
        got = meta.get(key, missing)
        if got is missing:
            problems.append(f"does not record {key!r} (this run uses {key} {want!r})")
        elif not _equal(got, want):
            problems.append(f"was written by {key} {got!r} but this run uses {key} {want!r}")
    if problems:
        raise CheckpointError(f"checkpoint {path} " + "; it ".join(problems)
                              + ". Use a config that matches the checkpoint, or a different checkpoint.")


def _equal(a, b) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):  # shapes: (3, 64) matches [3, 64]
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors of different shapes, or an ambiguous truth value
        return False


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
