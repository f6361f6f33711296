"""The ``results.json`` contract between the evaluation protocol and the report.

One file per evaluation (one method, one seed, one training step). It is validated when read and when
written, so a malformed file fails here with the file and the field named, not later as a shape error
inside a table. Shapes are ``[trials][K]``: trials are independent draws of held-out tasks, K the
episodes of one trial (docs/reference.md section 6: per-episode-index curves within a trial).

    {"schema": 1, "method": "ppo", "label": "ppo__agent.lr-0.001", "seed": 0, "suite": "lim2024", "step": 50000,
     "episodes_per_trial": 3,
     "sets": {"heldout": {"tasks": {"mixed": {
         "returns": [[...K...], ...],
         "metrics": {"frag_largest": [[...]], ...},          # final-step metrics, same shape
         "hindsight_best": {"rule": "best", "returns": [[...]]},
         "capacity_bound": [[...]]}}}}}

``label`` names the variant comparisons group by (the method plus the run's overrides, or the ``label=`` config
key); files written before it existed have none and are grouped by ``method``.

An evaluation run with ``eval.baselines=off`` writes ``"baselines": "off"`` in each task instead of
``hindsight_best`` and ``capacity_bound``; its tables leave those cells empty.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

SCHEMA_VERSION = 1
RESULTS_NAME = "results.json"

Matrix = list[list[float]]  # [trials][K]


class HindsightBest(TypedDict):
    rule: str  # the fixed heuristic with the best mean return on these streams
    returns: Matrix


class TaskResult(TypedDict):
    returns: Matrix
    metrics: dict[str, Matrix]
    hindsight_best: HindsightBest
    capacity_bound: Matrix


class EvalSet(TypedDict):
    tasks: dict[str, TaskResult]


class Results(TypedDict):
    schema: int
    method: str
    seed: int
    suite: str
    step: int
    episodes_per_trial: int
    sets: dict[str, EvalSet]


class _Bad(Exception):
    """A validation failure at a field path; turned into one ValueError naming the file."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")


def _get(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise _Bad(f"{where}.{key}" if where else key, "missing")
    return d[key]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_matrix(x, field: str, k: int, trials: int | None, finite: bool = True) -> int:
    """A rectangular [trials][k] list of numbers (finite unless told); returns the number of trials."""
    if not isinstance(x, list) or not x:
        raise _Bad(field, "must be a non-empty list of trials, each a list of per-episode numbers")
    for i, row in enumerate(x):
        if not isinstance(row, list):
            raise _Bad(field, f"trial {i} is {type(row).__name__}, expected a list of {k} numbers")
        if len(row) != k:
            raise _Bad(field, f"trial {i} has {len(row)} episodes, expected episodes_per_trial = {k}")
        for j, v in enumerate(row):
            if not isinstance(v, int | float) or isinstance(v, bool) or (finite and not math.isfinite(v)):
                raise _Bad(field, f"trial {i} episode {j} is {v!r}, expected a {'finite ' if finite else ''}number")
    if trials is not None and len(x) != trials:
        raise _Bad(field, f"has {len(x)} trials, but returns has {trials}")
    return len(x)


def _check_task(t, where: str, k: int) -> None:
    if not isinstance(t, dict):
        raise _Bad(where, "must be an object")
    n = _check_matrix(_get(t, "returns", where), f"{where}.returns", k, None)
    metrics = _get(t, "metrics", where)
    if not isinstance(metrics, dict):
        raise _Bad(f"{where}.metrics", "must be an object of metric name -> [trials][K]")
    for name, m in metrics.items():  # NaN allowed: an undefined metric shows as nan, not a lost evaluation
        _check_matrix(m, f"{where}.metrics.{name}", k, n, finite=False)
    if t.get("baselines") == "off":  # evaluated without the fixed rules and the bound
        if "hindsight_best" in t or "capacity_bound" in t:
            raise _Bad(f"{where}.baselines", "is 'off', but the task has hindsight_best / capacity_bound")
        return
    if "baselines" in t:
        raise _Bad(f"{where}.baselines", f"is {t['baselines']!r}; only 'off' is written (references omitted)")
    hb = _get(t, "hindsight_best", where)
    if not isinstance(hb, dict):
        raise _Bad(f"{where}.hindsight_best", "must be an object with rule and returns")
    if not isinstance(_get(hb, "rule", f"{where}.hindsight_best"), str):
        raise _Bad(f"{where}.hindsight_best.rule", "must be a string")
    _check_matrix(_get(hb, "returns", f"{where}.hindsight_best"), f"{where}.hindsight_best.returns", k, n)
    _check_matrix(_get(t, "capacity_bound", where), f"{where}.capacity_bound", k, n)


def _check(r) -> None:
    if not isinstance(r, dict):
        raise _Bad("(top level)", "must be a JSON object")
    schema = _get(r, "schema", "")
    if schema != SCHEMA_VERSION:
        raise _Bad("schema", f"is {schema!r}; this code reads schema {SCHEMA_VERSION}")
    for key, typ in (("method", str), ("suite", str)):
        if not isinstance(_get(r, key, ""), typ) or not r[key]:
            raise _Bad(key, f"is {r[key]!r}, expected a non-empty string")
    if "label" in r and (not isinstance(r["label"], str) or not r["label"]):
        raise _Bad("label", f"is {r['label']!r}, expected a non-empty string")
    for key in ("seed", "step", "episodes_per_trial"):
        if not _is_int(_get(r, key, "")):
            raise _Bad(key, f"is {r[key]!r}, expected an integer")
    if r["step"] < 0:
        raise _Bad("step", f"is {r['step']}, expected >= 0")
    k = r["episodes_per_trial"]
    if k < 1:
        raise _Bad("episodes_per_trial", f"is {k}, expected >= 1")
    sets = _get(r, "sets", "")
    if not isinstance(sets, dict) or not sets:
        raise _Bad("sets", "must be a non-empty object of set name -> {tasks: ...}")
    for sname, s in sets.items():
        where = f"sets.{sname}"
        if not isinstance(s, dict):
            raise _Bad(where, "must be an object with tasks")
        tasks = _get(s, "tasks", where)
        if not isinstance(tasks, dict) or not tasks:
            raise _Bad(f"{where}.tasks", "must be a non-empty object of task name -> results")
        for tname, t in tasks.items():
            _check_task(t, f"{where}.tasks.{tname}", k)


def validate_results(results: Any, source: str = "<results>") -> Results:
    """Check ``results`` against the schema; raise ValueError naming ``source`` and the bad field."""
    try:
        _check(results)
    except _Bad as e:
        raise ValueError(f"{source}: {e}") from None
    return results


def load_results(path: str | os.PathLike) -> Results:
    """Read and validate one ``results.json``; every error names the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read results file ({e.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return validate_results(data, str(path))


def _plain(x):
    """json ``default``: numpy arrays and scalars become lists and numbers, so writers may pass either."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def save_results(path: str | os.PathLike, results: Results) -> Path:
    """Validate, then write atomically (``write_json``): a run killed mid-write leaves the old file or none, never a
    truncated one that a later compare would trip over."""
    text = json.dumps(results, default=_plain, indent=1)
    validate_results(json.loads(text), str(path))  # as a reader will see it (numpy converted)
    return write_json(path, text)


def write_json(path: str | os.PathLike, doc) -> Path:
    """Write a JSON document (or its text) atomically: a temporary file in the same folder, fsync, os.replace."""
    path = Path(path)
    text = doc if isinstance(doc, str) else json.dumps(doc, default=_plain, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _results_under(top: Path) -> list[Path]:
    """Every results file under ``top``, following linked folders, each real folder walked once."""
    files, walked = [], set()
    for root, dirs, names in os.walk(top, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs.sort()
        if RESULTS_NAME in names:
            files.append(Path(root) / RESULTS_NAME)
    return sorted(files)


def find_results(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, Results]]:
    """Every ``results.json`` under the given files or folders (recursively), loaded and validated.

    A path with no results is an error naming it: a typo in a run dir should not silently drop a method
    from the comparison. Folders linked into a folder are followed (a folder of symlinks to the runs to compare
    works), each real folder once, so a link back up cannot loop. Files reached twice (a run dir and a file inside
    it, or two links to one run) are read once.
    """
    seen: set[Path] = set()
    out: list[tuple[Path, Results]] = []
    for p in map(Path, paths):
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = _results_under(p)
            if not files:
                raise ValueError(f"{p}: no {RESULTS_NAME} found under this folder")
        else:
            raise ValueError(f"{p}: no such file or folder")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append((f, load_results(f)))
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a JSONL file (e.g. ``metrics.jsonl``); a torn last line from a killed run is skipped."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the process died mid-write: everything before it is intact
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON: {line[:80]!r}") from None
    return records


def label_of(r: Results) -> str:
    """The variant a result belongs to: its ``label``, or its method for files written without one."""
    return r.get("label") or r["method"]


def run_of(f: Path) -> Path:
    """The run a results file belongs to: RUN/eval/step_N/results.json -> RUN; any other file: its folder."""
    return f.parent.parent.parent if f.parent.parent.name == "eval" else f.parent


def latest_per_run(found: list[tuple[Path, Results]], warnings: list[str] | None = None) -> list[tuple[Path, Results]]:
    """Keep, for each run (label, suite, seed and run folder), the evaluation at its largest training step.

    A run dir holds one evaluation per checkpoint; the comparison reports the final one. Two files of one run at
    the same step are ambiguous, so they are an error naming both. Two runs of the same label, suite and seed
    with different steps are both kept: their labels get ``@STEP`` appended and a warning says so (appended to
    ``warnings`` when given). At the same step they are an error naming both.
    """
    best: dict[tuple, tuple[Path, Results]] = {}
    for f, r in found:
        key = (label_of(r), r["suite"], r["seed"], run_of(f).resolve())
        if key in best:
            g, q = best[key]
            if q["step"] == r["step"]:
                raise ValueError(f"two evaluations of {key[0]!r} suite {key[1]!r} seed {key[2]} at step "
                                 f"{r['step']}: {g} and {f}; pass only one of them")
            if q["step"] > r["step"]:
                continue
        best[key] = (f, r)
    runs: dict[tuple[str, str, int], list[tuple[Path, Results]]] = {}
    for (label, suite, seed, _), fr in best.items():
        runs.setdefault((label, suite, seed), []).append(fr)
    split = set()
    for (label, suite, seed), members in runs.items():
        if len(members) > 1:
            steps = [r["step"] for _, r in members]
            if len(set(steps)) < len(steps):
                raise ValueError(f"two runs of {label!r} suite {suite!r} seed {seed} evaluated at the same step: "
                                 + " and ".join(str(f) for f, _ in members) + "; pass only one of them, or give "
                                 "them different labels (label=...)")
            split.add((label, suite))
    out = []
    for f, r in best.values():
        if (label_of(r), r["suite"]) in split:
            r = {**r, "label": f"{label_of(r)}@{r['step']}"}
        out.append((f, r))
    for label, suite in sorted(split):
        msg = (f"{label!r} (suite {suite!r}): several runs of one seed with different steps; kept all, labelled "
               f"{label}@STEP")
        if warnings is not None:
            warnings.append(msg)
    return sorted(out, key=lambda fr: (label_of(fr[1]), fr[1]["suite"], fr[1]["seed"], fr[1]["step"]))
