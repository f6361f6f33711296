"""Checkpoints that cannot run code: tensors in safetensors, everything else in one JSON document.

A checkpoint is one ``ckpt_{step:012d}.safetensors`` file. Its tensors are the tensors of the payload (network
and optimiser state, replay buffers, RNG states, env state); the rest of the payload (config, counters, the
nesting of dicts / lists / tuples, numpy arrays as raw bytes) is a JSON document stored in the safetensors
header's metadata, next to ``format_version`` and a SHA-256 ``digest`` of the document and every tensor's
bytes. Reading it parses JSON and copies tensor bytes: no pickle, so a checkpoint downloaded from anywhere
cannot execute anything, and a file edited by hand (or bit-rotted) fails its digest with a clear message.

Files of format 1 (``ckpt_*.pt``, a ``torch.save`` pickle) are refused with a message; ``convert_legacy`` turns
one into the new format, but only with ``trust=True`` (``python scripts/convert_checkpoint.py --trust FILE``),
because reading it runs whatever the pickle says.

By convention ``payload["meta"]`` holds what must match for the checkpoint to be usable (agent name,
observation size, number of actions); ``load_checkpoint(..., expected=...)`` checks it and names every value
that differs. ``compare_config`` checks a stored config against the overrides a run was given.
Writes are atomic (temporary file, fsync, rename): a crash leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

FORMAT_VERSION = 2
SUFFIX = ".safetensors"
_NAME = re.compile(r"^ckpt_(\d+)\.safetensors$")
_LEGACY_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_BEST_NAME = re.compile(r"^best_(\d+)\.safetensors$")  # model selection's kept weights (never listed, pruned, resumed)
_MAX_HEADER = 1 << 30  # safetensors' own readers refuse far smaller headers; ours holds replay-free JSON


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, tampered with, too new, or written for a different run set-up."""


# --------------------------------------------------------------------------------------------- writing

def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path (``checkpoint_path`` gives run folders'
    names; any other name works too).

    ``payload`` may nest dicts (any hashable plain keys), lists, tuples, None, bool, int, float, str, torch
    tensors and numpy arrays / scalars; anything else is a ``TypeError`` naming where it sits. The data goes to
    a temporary file in the same directory, is fsynced, then renamed onto ``path``. On any failure (disk full,
    read-only folder, interrupt) the temporary file is removed and the previous checkpoint is untouched.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    document = {"format_version": FORMAT_VERSION, "payload": _encode(payload, tensors, "payload")}
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    data = _st_save(tensors, metadata={"dreamalloc": text, "digest": _digest(text, tensors)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # KeyboardInterrupt too: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write checkpoint {path}: {_why(e)}; the previous checkpoint in "
                                   f"{path.parent} is unchanged") from e
        raise
    _fsync_dir(path.parent)
    return path


def _encode(obj: Any, tensors: dict, where: str) -> Any:
    """JSON for the structure; tensors and array bytes go to ``tensors`` and are referenced by name."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, torch.Tensor):
        if obj.is_sparse or obj.layout != torch.strided:
            raise TypeError(f"checkpoint: {where} is a {obj.layout} tensor; only dense tensors can be saved")
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()  # own storage: no aliasing between keys
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"checkpoint: {where} is a numpy array of Python objects; it cannot be saved safely")
        name = f"t{len(tensors)}"
        raw = np.ascontiguousarray(obj)
        tensors[name] = torch.from_numpy(raw.reshape(-1).view(np.uint8).copy())
        return {"__ndarray__": name, "dtype": raw.dtype.str, "shape": list(raw.shape)}
    if isinstance(obj, np.generic):
        return {"__npscalar__": obj.dtype.str, "value": _encode(obj.item(), tensors, where)}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, tuple):  # torch.Size too
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors, f"{where} key"), _encode(v, tensors, f"{where}[{k!r}]")]
                             for k, v in obj.items()]}
    raise TypeError(f"checkpoint: {where} has type {type(obj).__name__}, which a checkpoint cannot hold "
                    f"(tensors, numpy arrays, numbers, strings, None, lists, tuples and dicts only)")


def _digest(text: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"|{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()) if t.dtype != torch.bool else \
        memoryview(flat.to(torch.uint8).numpy())


# --------------------------------------------------------------------------------------------- reading

def load_checkpoint(path: str | Path, expected: dict | None = None, map_location="cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint``; raise ``CheckpointError`` naming the file if unusable.

    Nothing in the file is executed: the header is JSON, the tensors raw bytes, and the digest must match.
    ``expected`` maps keys of ``payload["meta"]`` to the values this run needs (e.g.
    ``{"agent": "dqn", "obs_dim": 257, "n_actions": 3}``); every mismatch is reported in one message.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (latest_checkpoint(dir) "
                              f"finds the newest in a directory)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file; pass a ckpt_*{SUFFIX} file or use "
                              f"latest_checkpoint({str(path)!r})")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} could not be read: {_why(e)}") from e
    if _is_legacy(data):
        raise CheckpointError(
            f"checkpoint {path} is of format 1 (a pickle written by an older dreamalloc); it is not loaded because "
            f"reading a pickle can run arbitrary code. If you trust where it came from, convert it with "
            f"`python scripts/convert_checkpoint.py --trust {path}` (format {FORMAT_VERSION}, then load that)")
    metadata = _header_metadata(path, data)
    version = _document_version(path, metadata)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version} but this dreamalloc reads versions "
                              f"up to {FORMAT_VERSION}; upgrade dreamalloc to load it")
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors' own checks: offsets, sizes, dtypes
        raise CheckpointError(f"checkpoint {path} is corrupt (its tensor data does not match its header): "
                              f"{type(e).__name__}: {e}") from e
    text = metadata["dreamalloc"]
    if metadata.get("digest") != _digest(text, tensors):
        raise CheckpointError(f"checkpoint {path} fails its content digest: it was modified or corrupted after it "
                              f"was written; use another checkpoint (or the run that wrote it again)")
    document = json.loads(text)
    try:
        payload = _decode(document["payload"], tensors, map_location)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has a malformed document: {e}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a checkpoint dict")
    payload["format_version"] = version
    if expected:
        check_meta(path, payload.get("meta"), expected)
    return payload


def _is_legacy(data: bytes) -> bool:
    """torch.save's zip container, or a bare pickle (protocol 2+ starts with 0x80 and the protocol number), and not
    a safetensors file, whole or truncated (whose first 8 bytes, the header length, may start with 0x80 too: its
    header then starts with '{' at byte 8, where a pickle holds a high byte of its frame length, 0)."""
    if len(data) >= 9 and data[8:9] == b"{":
        return False
    return data[:4] == b"PK\x03\x04" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def _header_metadata(path: Path, data: bytes) -> dict:
    not_ours = (f"checkpoint {path} is not a dreamalloc checkpoint (expected a safetensors file written by "
                f"save_checkpoint)")
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated or empty ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, _MAX_HEADER):
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file (its header claims "
                              f"{n} bytes, the file has {len(data)})")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{not_ours}: the header is not JSON ({e})") from e
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "dreamalloc" not in meta:
        raise CheckpointError(f"{not_ours}: its header has no dreamalloc document")
    return meta


def _document_version(path: Path, metadata: dict) -> int:
    try:
        version = json.loads(metadata["dreamalloc"]).get("format_version")
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} has a malformed document: {e}") from e
    if isinstance(version, bool) or not isinstance(version, int) or version < 2:
        raise CheckpointError(f"checkpoint {path} records format version {version!r}, which no dreamalloc wrote")
    return version


def _decode(obj: Any, tensors: dict, map_location) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, map_location) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        t = tensors[obj["__tensor__"]]
        return t.to(map_location) if map_location is not None else t
    if "__ndarray__" in obj:
        raw = tensors[obj["__ndarray__"]].numpy().tobytes()
        dtype = np.dtype(obj["dtype"])
        if dtype.hasobject:
            raise ValueError("numpy object arrays are not allowed")
        return np.frombuffer(raw, dtype=dtype).reshape(obj["shape"]).copy()
    if "__npscalar__" in obj:
        dtype = np.dtype(obj["__npscalar__"])
        if dtype.hasobject:
            raise ValueError("numpy object scalars are not allowed")
        return dtype.type(_decode(obj["value"], tensors, map_location))
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__dtype__" in obj:
        dt = getattr(torch, obj["__dtype__"], None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"unknown torch dtype {obj['__dtype__']!r}")
        return dt
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, map_location) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_freeze(_decode(k, tensors, map_location)): _decode(v, tensors, map_location)
                for k, v in obj["__dict__"]}
    bad = [k for k in obj if k.startswith("__")]
    if bad:
        raise ValueError(f"unknown marker {bad[0]!r}")
    return {k: _decode(v, tensors, map_location) for k, v in obj.items()}


def _freeze(key):
    return tuple(_freeze(k) for k in key) if isinstance(key, list | tuple) else key


# --------------------------------------------------------------------------------------------- folders

def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``directory/ckpt_{step:012d}.safetensors``: zero-padded so that names sort by step."""
    step = int(step)
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return Path(directory) / f"ckpt_{step:012d}{SUFFIX}"


def best_path(directory: str | Path, step: int) -> Path:
    """``directory/best_{step:012d}.safetensors``: the weights model selection kept (``eval.select_every``), a
    checkpoint like the others that ``evaluate.py checkpoint=FILE`` reads, but never resumed from or pruned."""
    return Path(directory) / f"best_{int(step):012d}{SUFFIX}"


def list_best(directory: str | Path) -> list[Path]:
    """The ``best_*`` files of ``directory`` sorted by step."""
    return _matching(directory, _BEST_NAME)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files of ``directory`` sorted by step, oldest first (temporary files never match)."""
    return _matching(directory, _NAME)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the largest step in ``directory``, or None (also if it does not exist).

    A folder that holds only format-1 files (``ckpt_*.pt``) returns the newest of those, so that loading it
    explains the format change instead of saying the folder is empty.
    """
    found = list_checkpoints(directory) or _matching(directory, _LEGACY_NAME)
    return found[-1] if found else None


def newest_readable(directory: str | Path, expected: dict | None = None,
                    warn=print) -> tuple[Path, dict] | None:
    """The newest checkpoint of ``directory`` that loads, with its payload; unreadable newer ones are skipped
    with a message through ``warn`` (one per file). None when the folder holds no checkpoint at all; a
    ``CheckpointError`` listing every file when none is readable."""
    found = list_checkpoints(directory) or _matching(directory, _LEGACY_NAME)
    errors = []
    for path in reversed(found):
        try:
            payload = load_checkpoint(path, expected)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for message in errors:
            warn(f"dreamalloc: warning: skipping an unreadable checkpoint: {message}; using {path.name} instead")
        return path, payload
    if errors:
        raise CheckpointError(f"no readable checkpoint in {directory}: " + " | ".join(errors))
    return None


def prune_checkpoints(directory: str | Path, keep: int, candidates: list[Path] | None = None,
                      protect: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (by step) among ``candidates`` (default: every checkpoint
    in ``directory``); ``keep=0`` keeps everything and ``protect`` (the file just written) is never deleted.
    Returns the deleted paths."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0 (0 keeps every checkpoint), got {keep}")
    if keep == 0:
        return []
    found = list_checkpoints(directory)
    if candidates is not None:
        wanted = {Path(c).resolve() for c in candidates}
        found = [p for p in found if p.resolve() in wanted]
    if protect is not None and Path(protect).resolve() in {p.resolve() for p in found}:
        found = [p for p in found if p.resolve() != Path(protect).resolve()]
        keep -= 1  # the protected file is one of the kept ones
    gone = found[:max(len(found) - keep, 0)]
    for old in gone:
        old.unlink(missing_ok=True)
    return gone


def check_writable(directory: str | Path, what: str) -> None:
    """Create ``directory`` and write / remove a probe file in it, so a read-only or full folder is found before
    any training is spent; an ``OSError`` with a message naming the folder and the setting otherwise."""
    directory = Path(directory)
    probe = directory / f".write-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(e.errno, f"{what} {directory} is not writable: {_why(e)}; fix its permissions or free "
                               f"space, or choose another folder before training starts") from e
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def _matching(directory: str | Path, pattern: re.Pattern) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for p in directory.iterdir():
        m = pattern.match(p.name)
        if m and p.is_file():
            steps.append((int(m.group(1)), p))
    return [p for _, p in sorted(steps)]


# --------------------------------------------------------------------------------------------- checks

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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` for a nested dict; lists are leaves (compared whole)."""
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree} if prefix else {}


def config_differences(stored: dict, wanted: dict, keys: list[str], ignore: tuple = ()) -> list[str]:
    """``"key: checkpoint A, this run B"`` for every flattened key under one of ``keys`` (and under none of
    ``ignore``) whose values differ."""
    a, b = flatten(stored), flatten(wanted)

    def under(key, prefixes):
        return any(key == k or key.startswith(k + ".") for k in prefixes)

    out = []
    for key in sorted(set(a) | set(b)):
        if not under(key, keys) or under(key, ignore):
            continue
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if not _equal(x, y):
            out.append(f"{key}: checkpoint {x!r}, this run {y!r}")
    return out


def _equal(a, b) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):  # shapes: (3, 64) matches [3, 64]
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors of different shapes, or an ambiguous truth value
        return False


# --------------------------------------------------------------------------------------------- format 1

def convert_legacy(path: str | Path, trust: bool = False) -> Path:
    """Rewrite a format-1 checkpoint (``ckpt_N.pt``, a pickle) as ``ckpt_N.safetensors`` next to it.

    Reading a pickle runs the code it names, so this refuses unless ``trust=True``: pass it only for a file
    you (or someone you trust) wrote. The old file is left in place.
    """
    path = Path(path)
    if not trust:
        raise CheckpointError(f"refusing to read {path}: a format-1 checkpoint is a pickle, and unpickling runs "
                              f"whatever code the file names; pass --trust only if you trust its origin")
    payload = torch.load(path, map_location="cpu", weights_only=False)  # the one unpickling call, opted into
    if not isinstance(payload, dict) or payload.get("format_version") != 1:
        raise CheckpointError(f"{path} is not a format-1 dreamalloc checkpoint")
    payload = {k: v for k, v in payload.items() if k != "format_version"}
    m = _LEGACY_NAME.match(path.name)
    out = checkpoint_path(path.parent, int(m.group(1))) if m else path.with_suffix(SUFFIX)
    return save_checkpoint(out, payload)


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only folder or file system)"
    return e.strerror or str(e)


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
