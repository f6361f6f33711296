"""The one logging interface: a JSONL file that always exists, plus W&B (offline / online / disabled).

Why both: the JSONL file is what tests, plots and quick greps read, and it exists even when W&B is
disabled or broken; W&B is what researchers browse and compare runs in. This is the only module in the
project that imports wandb, and it does so lazily (inside ``Logger``), so ``import dreamalloc`` and runs
with ``mode="disabled"`` never load it.

Files written under ``run_dir``::

    metrics.jsonl   one {"step": ..., <metrics>} object per ``log`` call (appended). No wall-clock time in it,
                    so two runs with the same seed write identical files; W&B keeps its own timestamps.
                    A resumed run first cuts it back to the lines its checkpoint had seen
                    (``resume_lines``); the cut lines go to metrics.discarded.jsonl.
    run_info.json   config, git commit / dirty flag, package versions, hostname, W&B run id; ``invocations``
                    lists every start of the run (a resume keeps the original command and start time)
    timing.jsonl    one {"step", "time/steps_per_second", "time/wall_seconds"} object per ``log_timing`` call: the
                    wall-clock numbers, kept out of metrics.jsonl (also sent to W&B)
    summary.json    merged ``log_summary`` values
    tables/*.csv    ``log_table`` tables
    wandb/          W&B's own run folder (offline / online modes only)
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import platform
import secrets
import socket
import string
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODES = ("offline", "online", "disabled")
_os_write = os.write  # one name for the metric writes (the fault tests make it fail)
RESERVED_KEYS = ("step",)


class Logger:
    """Logs scalars, tables, images and a summary to ``run_dir`` and (unless disabled) to one W&B run.

    ``resume_id`` continues an earlier W&B run (its id is in that run's ``run_info.json``, see
    ``load_run_info``), so a resumed training run stays one curve in W&B. Use as a context manager or
    call ``close()``; the JSONL file is flushed on every call, so a killed run loses nothing logged.
    """

    def __init__(self, run_dir: str | Path, config: dict, mode: str = "offline", project: str = "dreamalloc",
                 entity: str | None = None, name: str | None = None, group: str | None = None,
                 tags: list[str] | tuple = (), resume_id: str | None = None, resume_lines: int | None = None,
                 resume_step: int | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown W&B logging mode {mode!r}; choose one of {', '.join(MODES)}")
        if not isinstance(config, Mapping):
            raise TypeError(f"Logger config must be a dict (the resolved run config), got {type(config).__name__}")
        self.mode = mode
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._run = None
        self._closed = False

        info = {
            "git_commit": None, "git_dirty": None, **_git_state(),
            "versions": _versions(),
            "hostname": socket.gethostname(),
            "command": list(sys.argv),
            "start_time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        config = _finite_or_none(_jsonable(config))
        if mode != "disabled":
            self._run = _init_wandb(self.run_dir, mode, project, entity, name, group, tags, resume_id,
                                    config={**config, "run_info": info})
        run_info = {"config": config, **info, "wandb": {
            "mode": mode, "run_id": self.wandb_run_id, "project": project, "entity": entity,
            "name": name, "group": group, "tags": list(tags), "resumed_from": resume_id}}
        invocation = {k: info[k] for k in ("command", "start_time", "git_commit", "git_dirty", "hostname")}
        earlier = load_run_info(self.run_dir) if resume_step is not None else None
        if earlier is not None:  # a resumed run keeps the original start and command, and adds this invocation
            run_info.update({k: earlier[k] for k in ("command", "start_time", "git_commit", "git_dirty")
                             if k in earlier})
            history = earlier.get("invocations") or [{k: earlier.get(k) for k in invocation}]
            run_info["invocations"] = [*history, {**invocation, "resumed_at_step": int(resume_step)}]
        else:
            run_info["invocations"] = [invocation]
        _atomic_write_text(self.run_dir / "run_info.json", json.dumps(run_info, indent=2, allow_nan=False) + "\n")
        path = self.run_dir / "metrics.jsonl"
        if resume_lines is not None:
            _truncate_replayed(path, int(resume_lines))
        # One os.write per line on an unbuffered descriptor: a failed write is cut back, never left torn.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines = _count_lines(path)

    @property
    def wandb_run_id(self) -> str | None:
        """The W&B run id (pass it as ``resume_id`` to continue this run), or None when W&B is disabled."""
        return self._run.id if self._run is not None else None

    def log(self, metrics: dict[str, float | int], step: int) -> None:
        """Append one JSONL line and log ``metrics`` to W&B at ``step``.

        numpy / torch scalars become Python numbers; NaN and infinities are written as JSON ``null``
        (strict JSON, readable by any tool) and passed to W&B unchanged.
        """
        self._check_open()
        step = _to_int(step, "step")
        for key in RESERVED_KEYS:
            if key in metrics:
                raise ValueError(f"metric name {key!r} is reserved by the JSONL format; rename the metric")
        values = {str(k): _scalar(v, k) for k, v in metrics.items()}
        line = {"step": step, **values}
        data = (json.dumps(_finite_or_none(line), allow_nan=False) + "\n").encode("utf-8")
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = _os_write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            os.ftruncate(self._fd, end)  # no torn line: the file ends with the last complete record
            raise OSError(e.errno, f"could not append to {self.run_dir / 'metrics.jsonl'}: "
                                   f"{e.strerror or e}") from e
        self.lines += 1
        if self._run is not None:
            self._run.log(values, step=step)

    def log_timing(self, metrics: dict[str, float], step: int) -> None:
        """Wall-clock numbers (steps per second, elapsed time): to W&B and ``timing.jsonl``, never to
        metrics.jsonl, which stays identical between two runs of one seed."""
        self._check_open()
        values = {str(k): _scalar(v, k) for k, v in metrics.items()}
        with (self.run_dir / "timing.jsonl").open("a") as f:
            f.write(json.dumps(_finite_or_none({"step": _to_int(step, "step"), **values}), allow_nan=False) + "\n")
        if self._run is not None:
            self._run.log(values, step=_to_int(step, "step"))

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int | None = None) -> None:
        """Write ``run_dir/tables/{name}.csv`` (overwritten) and log a ``wandb.Table`` when W&B is on
        (at ``step``; without one W&B advances its own step counter)."""
        self._check_open()
        columns = [str(c) for c in columns]
        clean_rows = []
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"table {name!r}: row {i} has {len(row)} cells but there are "
                                 f"{len(columns)} columns ({', '.join(columns)})")
            clean_rows.append([_scalar(v, f"{name}[{i}]") for v in row])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(clean_rows)
        _atomic_write_text(self._table_path(name), buf.getvalue())
        if self._run is not None:
            import wandb

            self._run.log({name: wandb.Table(columns=columns, data=clean_rows)}, step=step)

    def log_image(self, name: str, path: str | Path, step: int | None = None) -> None:
        """Attach an image file (a plot, a memory map) to the W&B run; the file itself stays on disk.

        A missing file is an error in every mode, so a broken plotting path is caught even with W&B off.
        """
        self._check_open()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"log_image({name!r}): image file {path} does not exist")
        if self._run is not None:
            import wandb

            image = wandb.Image(str(path))
            if step is None:
                self._run.log({name: image})
            else:
                self._run.log({name: image}, step=_to_int(step, "step"))

    def log_summary(self, metrics: dict) -> None:
        """Merge ``metrics`` into ``run_dir/summary.json`` (atomic rewrite) and the W&B run summary."""
        self._check_open()
        values = {str(k): _jsonable(v) for k, v in metrics.items()}
        path = self.run_dir / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        summary.update(values)
        _atomic_write_text(path, json.dumps(_finite_or_none(summary), indent=2, allow_nan=False) + "\n")
        if self._run is not None:
            self._run.summary.update(values)

    def close(self, exit_code: int = 0) -> None:
        """Close the JSONL file and finish the W&B run (marked failed when ``exit_code`` != 0). Idempotent."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        if self._run is not None:
            self._run.finish(exit_code=exit_code)

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exit_code=0 if exc_type is None else 1)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"Logger for {self.run_dir} is closed; create a new Logger to log more")

    def _table_path(self, name: str) -> Path:
        rel = Path(f"{name}.csv")
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"table name {name!r} must be a relative name such as 'eval' or 'eval/held_out'")
        path = self.run_dir / "tables" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _truncate_replayed(path: Path, keep: int) -> None:
    """Keep the first ``keep`` lines of ``path`` (what the checkpoint a run resumes from had seen); the lines a
    killed run wrote after it are moved to ``metrics.discarded.jsonl`` (appended), since they are replayed."""
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    if len(lines) <= keep and data.endswith(b"\n"):
        return
    kept, dropped = b"".join(lines[:keep]), b"".join(lines[keep:])
    if dropped:
        with open(path.with_name("metrics.discarded.jsonl"), "ab") as f:
            f.write(dropped if dropped.endswith(b"\n") else dropped + b"\n")
    _atomic_write_bytes(path, kept)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_run_info(run_dir: str | Path) -> dict | None:
    """The ``run_info.json`` of an earlier run (``["wandb"]["run_id"]`` is its W&B id), or None if absent."""
    path = Path(run_dir) / "run_info.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# --------------------------------------------------------------------------------------------- helpers

def _init_wandb(run_dir: Path, mode: str, project: str, entity: str | None, name: str | None,
                group: str | None, tags, resume_id: str | None, config: dict):
    import wandb

    # Console capture is off: it fights with pytest / Hydra output capture, and Hydra already keeps the log.
    # Offline runs are silent; online runs still print the run's URL.
    settings = wandb.Settings(console="off", silent=mode != "online")
    try:
        return wandb.init(dir=str(run_dir), mode=mode, project=project, entity=entity, name=name, group=group,
                          tags=list(tags) or None, config=config, id=resume_id or _new_run_id(),
                          resume="allow", reinit="create_new", settings=settings)
    except Exception as e:  # wandb raises several types (UsageError, CommError, ...) for the same user fix
        hint = (" Run `wandb login` (or set WANDB_API_KEY) and check the network, or log with mode=offline."
                if mode == "online" else "")
        raise RuntimeError(f"could not start a W&B run (mode={mode}, project={project!r}) in {run_dir}: "
                           f"{type(e).__name__}: {e}.{hint}") from e


def _new_run_id(length: int = 8) -> str:
    """A W&B-style run id (lowercase letters and digits); chosen by us so it can be stored before init."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _git_state() -> dict:
    """Commit and dirty flag of the repository holding this file; Nones outside a git checkout."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain")
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}


def _versions() -> dict:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "dreamalloc": version("dreamalloc"), "torch": torch.__version__,
            "numpy": np.__version__, "gymnasium": version("gymnasium"), "wandb": version("wandb")}


def _scalar(value: Any, key: Any) -> bool | int | float | str | None:
    """A JSON/W&B-ready Python scalar from a Python, numpy or one-element torch value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        n = value.numel() if isinstance(value, torch.Tensor) else value.size
        if n != 1:
            raise ValueError(f"metric {key!r} has {n} elements; log a scalar (e.g. its mean)")
        return value.item()
    raise TypeError(f"metric {key!r} has type {type(value).__name__}; log a number, bool or string")


def _to_int(value: Any, key: str) -> int:
    scalar = _scalar(value, key)
    if isinstance(scalar, bool) or not isinstance(scalar, int):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    return scalar


def _jsonable(value: Any) -> Any:
    """Config / summary values as plain JSON types (numpy, torch, Paths and tuples included)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):  # dicts and OmegaConf's DictConfig
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):  # lists, tuples, OmegaConf's ListConfig
        return [_jsonable(v) for v in value]
    return str(value)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
