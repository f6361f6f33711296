"""What the app computes, without Streamlit: parsing what a person types, running placement rules and learnt
agents on it through the allocation env, replaying streams and traces, and reading evaluation results.

Every method runs inside the real env (``AllocCore``): the fixed rules as its heuristic action space (one heap
row per rule, the same requests), a learnt agent as its checkpoint's own env config, so what the app shows is
what training and evaluation see. Anything a person can get wrong ends in ``AppInputError`` with one message
that names the problem; the page shows it instead of a traceback.

Playground maps are label maps ``[steps, N]`` int: -1 a free cell, 0 a block of the starting layout, k >= 1 the
block made by the k-th allocation of the request list. Replay maps use the env's allocation ordinal of each
block (``block_seq``), so a block keeps its colour from step to step.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamalloc.alloc import AllocConfig, AllocCore
from dreamalloc.alloc.heap import RULES, FreeRuns, HeapBatch, heap_metrics
from dreamalloc.alloc.workloads import ALLOC, FREE, FREE_ALL, Requests, RequestStream, make_stream, stream_names
from dreamalloc.alloc.workloads.adversarial import MANDAL_SIZES, mandal_layout
from dreamalloc.alloc.workloads.traces import TraceError, read_trace, shipped_traces

MANDAL_CELLS = 100
DEFAULT_REQUESTS = ", ".join(str(s) for s in MANDAL_SIZES)  # Mandal & Rohil's request list
MAX_CELLS = 65536
MAX_REQUESTS = 2000
MAX_REPLAY_STEPS = 5000
MAX_MAP_CELLS = 40_000_000  # cells of map history one run may keep (int32: 160 MB): steps x N x methods
MAP_WIDTH = 1024  # a map wider than this many cells is drawn as this many bins (the mean colour of each)


class AppInputError(ValueError):
    """Something the person typed, uploaded or pointed at cannot be used; the message says what and why."""


# ------------------------------------------------------------------------------------------------------------------
# what a person types
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    kind: str  # "a": allocate ``arg`` cells; "f": free the block made by allocation number ``arg`` (1-based)
    arg: int


def parse_cells(text: str | int) -> int:
    """The heap size N from a text field: an integer in [2, MAX_CELLS]."""
    s = str(text).strip()
    if not re.fullmatch(r"[+-]?\d+", s):
        raise AppInputError(f"heap size {s!r} is not an integer; type a number of cells such as 100")
    n = int(s)
    if not 2 <= n <= MAX_CELLS:
        raise AppInputError(f"heap size {n} is out of range: a heap has 2 to {MAX_CELLS} cells")
    return n


def parse_requests(text: str, cells: int) -> list[Op]:
    """A request list such as ``8, 12, 5, f1, 9``: a positive integer allocates that many cells, ``fK`` frees the
    block of the K-th allocation of the list. Commas, spaces or new lines separate requests."""
    tokens = [t for t in re.split(r"[\s,;]+", str(text).strip()) if t]
    if not tokens:
        raise AppInputError("the request list is empty: type sizes such as 8, 12, 5 (and fK to free block K)")
    if len(tokens) > MAX_REQUESTS:
        raise AppInputError(f"the request list has {len(tokens)} requests; the playground takes at most {MAX_REQUESTS}")
    ops: list[Op] = []
    n_allocs = 0
    freed: set[int] = set()
    for i, tok in enumerate(tokens, start=1):
        m = re.fullmatch(r"[fF](\d+)", tok)
        if m:
            k = int(m.group(1))
            if not 1 <= k <= n_allocs:
                raise AppInputError(f"request {i} ({tok}) frees block {k}, but only {n_allocs} allocation(s) come "
                                    f"before it; blocks are numbered 1, 2, ... in the order they are requested")
            if k in freed:
                raise AppInputError(f"request {i} ({tok}) frees block {k} a second time")
            freed.add(k)
            ops.append(Op("f", k))
            continue
        if not re.fullmatch(r"[+-]?\d+", tok):
            raise AppInputError(f"request {i} ({tok!r}) is not an integer size; type whole numbers of cells such as "
                                "8, 12, 5, or fK to free the block of allocation K")
        size = int(tok)
        if size < 1:
            raise AppInputError(f"request {i} asks for {size} cells; a size must be a positive integer")
        if size > cells:
            raise AppInputError(f"request {i} asks for {size} cells, more than the whole heap ({cells} cells)")
        n_allocs += 1
        ops.append(Op("a", size))
    return ops


def parse_layout(text: str, cells: int) -> list[tuple[int, int]]:
    """A saved layout: occupied cell ranges ``start-end`` (inclusive), e.g. ``0-9, 20-29``; or the JSON the app
    saves (``[[0, 9], [20, 29]]``). Ranges must lie inside the heap and not overlap."""
    import json

    s = str(text).strip()
    if not s:
        return []
    if s.startswith("["):
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise AppInputError(f"layout is not valid JSON ({e.msg} at column {e.colno}); write [[0, 9], [20, 29]] "
                                "or 0-9, 20-29") from None
        if not isinstance(data, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
                for r in data):
            raise AppInputError(f"layout {s[:60]!r} is not a list of [start, end] integer pairs such as "
                                "[[0, 9], [20, 29]]")
        pairs = [(a, b) for a, b in data]
    else:
        pairs = []
        for tok in (t for t in re.split(r"[\s,;]+", s) if t):
            m = re.fullmatch(r"(\d+)-(\d+)", tok)
            if not m:
                raise AppInputError(f"layout entry {tok!r} is not an occupied range; write start-end pairs such as "
                                    "0-9, 20-29 (inclusive cell numbers)")
            pairs.append((int(m.group(1)), int(m.group(2))))
    out = sorted((int(a), int(b)) for a, b in pairs)
    for a, b in out:
        if not 0 <= a <= b < cells:
            raise AppInputError(f"occupied range {a}-{b} must satisfy 0 <= start <= end <= {cells - 1} (the last cell "
                                f"of a {cells}-cell heap)")
    for (a0, b0), (a1, b1) in zip(out, out[1:], strict=False):
        if a1 <= b0:
            raise AppInputError(f"occupied ranges {a0}-{b0} and {a1}-{b1} overlap")
    return out


def layout_of(label_map: np.ndarray) -> list[list[int]]:
    """The occupied ranges [[start, end], ...] of a label map (what "save layout" writes)."""
    occ = np.asarray(label_map) >= 0
    ext = np.concatenate([[False], occ, [False]])
    edges = np.flatnonzero(ext[1:] != ext[:-1])
    return [[int(a), int(b) - 1] for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def starting_layout(kind: str, cells: int, saved: str = "") -> list[tuple[int, int]]:
    """The occupied ranges a playground heap starts with: ``mandal`` (Mandal & Rohil's pre-holed heap, scaled to
    N cells), ``empty`` or ``saved`` (``saved`` parsed by ``parse_layout``)."""
    if kind == "mandal":
        return mandal_layout(cells)
    if kind == "empty":
        return []
    if kind == "saved":
        return parse_layout(saved, cells)
    raise AppInputError(f"unknown starting layout {kind!r}; choose mandal, empty or saved")


# ------------------------------------------------------------------------------------------------------------------
# methods: the placement rules and learnt agents
# ------------------------------------------------------------------------------------------------------------------
def rule_names() -> list[str]:
    return list(RULES)


def load_checkpoint_agent(path: str):
    """A learnt agent of the allocation family, loaded with the safe loader (``dreamalloc.load_agent``: no
    unpickling). A missing file, a damaged checkpoint or one of another family is an ``AppInputError``."""
    import dreamalloc

    p = str(path).strip()
    if not p:
        raise AppInputError("no checkpoint path given: type the path of a ckpt_*.pt file, its folder or a run "
                            "directory")
    try:
        policy = dreamalloc.load_agent(p, device="cpu")
    except Exception as e:  # noqa: BLE001 - whatever the loader rejects, the page shows its message
        raise AppInputError(f"cannot load the checkpoint {p}: {e}") from None
    if not isinstance(policy.env_config, AllocConfig):
        raise AppInputError(f"the checkpoint {p} holds the {policy.meta.get('agent')} agent of another env family "
                            f"({type(policy.env_config).__name__}), not of the allocation env; pick a checkpoint "
                            "trained with an allocation env (env=alloc...)")
    return policy


def agent_config(policy, cells: int, stream: str, stream_params: dict, max_allocs: int) -> AllocConfig:
    """The checkpoint's own env config on another stream (the observation layout it was trained on stays), or an
    ``AppInputError`` when the agent cannot act on this heap."""
    cfg = policy.env_config
    name = policy.meta.get("agent", "agent")
    if cfg.cells != cells:
        raise AppInputError(f"the {name} checkpoint was trained on a heap of {cfg.cells} cells, but this heap has "
                            f"{cells}; set the heap size to {cfg.cells} to run it")
    if cfg.task_obs:
        raise AppInputError(f"the {name} checkpoint observes the task id (task_obs), which a typed request list or a "
                            "single stream does not have")
    new = dataclasses.replace(cfg, stream=stream, stream_params=dict(stream_params), max_allocs=max_allocs,
                              max_invalid=max_allocs, skip_forced=False, ideal=False)
    return new.validate()


def _check_obs(core, policy) -> None:
    if core.spec.obs_dim != policy.obs_dim or core.spec.n_actions != policy.n_actions:
        raise AppInputError(f"the {policy.meta.get('agent')} checkpoint expects observations of width "
                            f"{policy.obs_dim} and {policy.n_actions} actions, but this env gives "
                            f"{core.spec.obs_dim} and {core.spec.n_actions}")


# ------------------------------------------------------------------------------------------------------------------
# the playground: a request list on a starting layout
# ------------------------------------------------------------------------------------------------------------------
class ScriptStream(RequestStream):
    """A typed request list as a request stream: the starting layout at reset, then the list once.

    An allocation that fits in no free run is recorded as failed and skipped (the map stays as it was), so the
    env's episode never ends on it and every method sees the whole list. After each request the stream stores
    the label map of every row: ``maps[row][i]`` is the heap after request i (``maps[row][0]``: the starting layout).
    When a row's list is done it keeps the env going with filler requests that nobody records.
    """

    PARAMS: dict = {}

    def __init__(self, batch: int, cells: int, ops: Sequence[Op], layout: Sequence[tuple[int, int]]):
        super().__init__(batch, cells, "cpu")
        self.ops, self.layout = list(ops), list(layout)
        n = len(self.ops)
        self.ptr = [0] * self.batch
        self.started = [False] * self.batch
        self.done = np.zeros(self.batch, dtype=bool)
        self.failed = np.zeros((self.batch, n), dtype=bool)
        self.maps = np.full((self.batch, n + 1, self.cells), -1, dtype=np.int32)
        self.metrics = {k: np.zeros((self.batch, n + 1)) for k in ("frag_runs", "frag_largest", "utilisation",
                                                                     "free_runs", "largest_free")}
        self.seq_label: list[dict[int, int]] = [{} for _ in range(self.batch)]  # env ordinal -> block number
        self.n_user_allocs = [0] * self.batch

    def reset(self, heaps: HeapBatch, rows: torch.Tensor, seed, episode) -> None:
        for r in rows.tolist():
            if self.started[r]:
                continue  # the filler's episodes after the list: nothing to lay out again
            self.started[r] = True
            for a, b in self.layout:
                heaps.allocate(a, b - a + 1, heaps=[r])
            self._record(heaps, r, 0)

    def _record(self, heaps: HeapBatch, r: int, i: int) -> None:
        """Store row r's heap as map index i (0: the starting layout, i: after request i)."""
        owner = heaps.owner[r].numpy()
        seq = heaps.block_seq[r].numpy()
        labels = np.zeros(self.cells + 1, dtype=np.int32)  # slot -> label; slot -1 (free) maps through index -1
        for slot in np.flatnonzero(heaps.live[r].numpy()):
            labels[slot] = self.seq_label[r].get(int(seq[slot]), 0)
        labels[-1] = -1
        self.maps[r, i] = labels[owner]
        one = HeapBatch(1, self.cells)
        one.occ[0], one.used[0] = heaps.occ[r], heaps.used[r]
        m = heap_metrics(one, FreeRuns.of(one.occ))
        for k in self.metrics:
            self.metrics[k][r, i] = float(m[k][0])

    def next(self, heaps: HeapBatch, rows: torch.Tensor) -> Requests:
        n = len(rows)
        op = torch.full((n,), ALLOC, dtype=torch.long)
        size = torch.ones(n, dtype=torch.long)
        block = torch.full((n,), -1, dtype=torch.long)
        for j, r in enumerate(rows.tolist()):
            while True:
                p = self.ptr[r]
                if self.done[r]:  # filler: empty the heap, then allocate one cell, so the env runs on
                    if int(heaps.used[r]) > 0:
                        op[j] = FREE_ALL
                    break
                if p > 0:
                    self._record(heaps, r, p)
                if p == len(self.ops):
                    self.done[r] = True
                    continue
                o = self.ops[p]
                self.ptr[r] = p + 1
                if o.kind == "f":
                    seq = next((s for s, lab in self.seq_label[r].items() if lab == o.arg), None)
                    hit = heaps.live[r] & (heaps.block_seq[r] == (-2 if seq is None else seq))
                    op[j] = FREE
                    block[j] = int(hit.long().argmax()) if bool(hit.any()) else -1
                    break
                largest = int(FreeRuns.of(heaps.occ[r:r + 1]).largest()[0])
                self.n_user_allocs[r] += 1
                if o.arg > largest:
                    self.failed[r, p] = True
                    continue  # the map after a failed request is the map before it
                self.seq_label[r][int(heaps.n_allocs[r])] = self.n_user_allocs[r]
                size[j] = o.arg
                break
        return Requests(op, size, block)


@dataclass
class MethodRun:
    """One method's run of a request list or a stream."""

    name: str
    maps: np.ndarray  # [steps + 1, N] int32 labels
    failed: np.ndarray  # [steps] bool
    metrics: dict[str, np.ndarray]  # name -> [steps + 1]
    requests: list[str]  # what each step asked for, as text


def _drive(core, stream, act, limit: int) -> None:
    obs, info = core.reset(seed=[0] * core.B)
    state = None
    for _ in range(limit):
        if stream.done.all():
            return
        action, state = act(obs, info, state)
        obs, _, _, _, info = core.step(action)
    raise AppInputError(f"the run did not finish the request list within {limit} env steps (a learnt agent that keeps "
                        "choosing invalid places); try a rule or another checkpoint")


def _check_size(steps: int, cells: int, methods: int, what: str) -> None:
    kept = (steps + 1) * cells * max(methods, 1)
    if kept > MAX_MAP_CELLS:
        most = MAX_MAP_CELLS // (cells * max(methods, 1)) - 1
        raise AppInputError(f"{steps} {what} x {cells} cells x {methods} methods is more map history than the app "
                            f"keeps ({MAX_MAP_CELLS:,} cells); use at most {most} {what} on this heap, or fewer "
                            "methods")


def run_playground(ops: Sequence[Op], cells: int, layout: Sequence[tuple[int, int]], rules: Sequence[str],
                   agents: Sequence = ()) -> list[MethodRun]:
    """Every rule in ``rules`` and every loaded agent on the same request list and starting layout."""
    _check_size(len(ops), cells, len(rules) + len(agents), "requests")
    max_allocs = len(layout) + len(ops) + 2 * cells + 16
    texts = [str(o.arg) if o.kind == "a" else f"f{o.arg}" for o in ops]
    out: list[MethodRun] = []

    def collect(stream, names):
        for r, name in enumerate(names):
            out.append(MethodRun(name, stream.maps[r].copy(), stream.failed[r].copy(),
                                 {k: v[r].copy() for k, v in stream.metrics.items()}, texts))

    if rules:
        cfg = AllocConfig(cells=cells, action="heuristic", heuristics=tuple(rules), bitmap=False,
                          max_allocs=max_allocs)
        core = AllocCore(len(rules), cfg)
        stream = ScriptStream(len(rules), cells, ops, layout)
        core.domain.stream = stream  # the typed list stands in for the config's stream
        every = torch.arange(len(rules))
        _drive(core, stream, lambda obs, info, state: (every, None), 4 * len(ops) + 16)
        collect(stream, list(rules))
    for name, policy in agents:
        core = AllocCore(1, agent_config(policy, cells, "random", {}, max_allocs))
        _check_obs(core, policy)
        stream = ScriptStream(1, cells, ops, layout)
        core.domain.stream = stream

        def act(obs, info, state, policy=policy):
            return policy.predict(obs, state, episode_start=info["trial_start"], info=info)

        _drive(core, stream, act, 4 * len(ops) + 16 + int(core.cfg.max_invalid))
        collect(stream, [name])
    return out


# ------------------------------------------------------------------------------------------------------------------
# replay: a registered stream or a trace, step by step
# ------------------------------------------------------------------------------------------------------------------
def replayable_streams() -> list[str]:
    """Every registered stream (``tasks`` and ``shift`` take their task list as a parameter)."""
    return stream_names()


def parse_stream_params(text: str) -> dict:
    """Stream parameters as JSON (``{"target": "best"}``); an empty field is no parameters."""
    import json

    s = str(text).strip()
    if not s:
        return {}
    try:
        params = json.loads(s)
    except json.JSONDecodeError as e:
        raise AppInputError(f"stream parameters are not valid JSON ({e.msg} at column {e.colno}); write an object "
                            'such as {"target": "best"}') from None
    if not isinstance(params, dict):
        raise AppInputError(f'stream parameters must be a JSON object such as {{"target": "best"}}, got {s[:40]!r}')
    return params


def check_stream(name: str, cells: int, params: dict) -> None:
    """Build the stream once so a wrong name or parameter is a message, not a failure halfway through a run."""
    try:
        make_stream(name, 1, cells, **params)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise AppInputError(f"stream {name!r}: {e}") from None


def save_upload(data: bytes, name: str) -> str:
    """An uploaded trace, checked with the trace reader (``AppInputError`` naming the line when it is malformed),
    written to a temporary file whose path the ``trace`` stream takes."""
    import hashlib

    suffix = ".trace.gz" if str(name).endswith(".gz") else ".trace"
    folder = Path(tempfile.gettempdir()) / "dreamalloc-app-uploads"
    folder.mkdir(exist_ok=True)
    tmp = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"  # the same upload, the same path: cached runs
    if not tmp.exists():
        tmp.write_bytes(data)
    try:
        events = read_trace(tmp)
    except TraceError as e:
        raise AppInputError(f"the uploaded trace {name} is malformed: {str(e).replace(str(tmp), name)}") from None
    if not (events[:, 0] == 0).any():
        raise AppInputError(f"the uploaded trace {name} has no allocation events")
    return str(tmp)


@dataclass
class Replay:
    runs: list[MethodRun]
    steps: int
    first_difference: int | None  # the first step at which the methods' occupancy maps differ


def _label_map(core) -> np.ndarray:
    heaps = core.heaps
    owner = heaps.owner[0].numpy()
    seq = heaps.block_seq[0].numpy()
    lab = np.concatenate([seq, [-1]]).astype(np.int32)
    return lab[owner]


def _note(core, info: dict, maps: np.ndarray, metrics: dict, t: int) -> None:
    maps[t] = _label_map(core)
    for k in metrics:
        metrics[k][t] = float(info[k][0])


def run_replay(stream: str, params: dict, cells: int, steps: int, rules: Sequence[str], agents: Sequence = (),
               seed: int = 0) -> Replay:
    """``steps`` requests of a stream under each method (seed ``seed``, the same requests while the maps agree).

    Step t's map is the heap when request t arrives. A failure is a request that fits in no free run: the env's
    episode ends there and the next step starts an empty heap, as in training and evaluation."""
    if not 1 <= int(steps) <= MAX_REPLAY_STEPS:
        raise AppInputError(f"steps must lie in [1, {MAX_REPLAY_STEPS}], got {steps}")
    check_stream(stream, cells, params)
    _check_size(steps, cells, len(rules) + len(agents), "steps")
    methods = [(r, None) for r in rules] + list(agents)
    if not methods:
        raise AppInputError("choose at least one method (a placement rule or a checkpoint)")
    runs = []
    for name, policy in methods:
        max_allocs = 2 * cells
        if policy is None:
            core = AllocCore(1, AllocConfig(cells=cells, stream=stream, stream_params=dict(params), bitmap=False,
                                            action="heuristic", heuristics=(name,), max_allocs=max_allocs))
        else:
            core = AllocCore(1, agent_config(policy, cells, stream, params, max_allocs))
            _check_obs(core, policy)
        obs, info = core.reset(seed=[seed])
        maps = np.empty((steps + 1, cells), dtype=np.int32)
        failed = np.zeros(steps, dtype=bool)
        metrics = {k: np.zeros(steps + 1) for k in ("frag_runs", "frag_largest", "utilisation", "free_runs",
                                                     "largest_free")}
        req, state = [], None

        for t in range(steps):
            _note(core, info, maps, metrics, t)
            req.append(str(int(info["request"][0])))
            if policy is None:
                action = torch.zeros(1, dtype=torch.long)
            else:
                action, state = policy.predict(obs, state, episode_start=info["trial_start"], info=info)
            obs, _, term, _, info = core.step(action)
            failed[t] = bool(term[0])
        _note(core, info, maps, metrics, steps)
        runs.append(MethodRun(name, maps, failed, metrics, req))
    return Replay(runs, steps, first_difference([r.maps for r in runs]))


# ------------------------------------------------------------------------------------------------------------------
# results of runs
# ------------------------------------------------------------------------------------------------------------------
def read_results(path: str) -> tuple[list, list[str]]:
    """Every evaluation under a run directory, a folder of runs or one results.json (for each run its largest
    step), validated by the report's reader; ``(found, warnings)``. Anything unreadable is an ``AppInputError``."""
    from dreamalloc.report.results import find_results, latest_per_run

    p = str(path).strip()
    if not p:
        raise AppInputError("type the path of a run directory, a folder of runs or a results.json file")
    warnings: list[str] = []
    try:
        found = latest_per_run(find_results([p]), warnings)
    except (OSError, ValueError) as e:
        raise AppInputError(f"cannot read results from {p}: {e}") from None
    return found, warnings


def table_rows(rows: Sequence[dict], digits: int = 3) -> list[dict]:
    """Rows of the report's tables with every (mean, low, high) written as ``mean [low, high]``."""
    from dreamalloc.report.tables import format_value

    first = ("label", "set", "task", "method", "seed", "seeds", "n_seeds", "step", "trials", "episodes", "return",
             "first_ep", "last_ep", "hindsight_rule", "hindsight_best", "capacity_bound")
    out = []
    for r in rows:
        keys = [k for k in first if k in r] + [k for k in r if k not in first]
        out.append({k: format_value(r[k], digits) if isinstance(r[k], (tuple, float)) else r[k] for k in keys})
    return out


def adaptation_curves(results) -> dict[tuple[str, str], dict[str, list]]:
    """{(set, task): {name: [(mean, low, high)] per episode of a trial}} for the method, its hindsight-best rule
    and the capacity bound (the last two where the evaluation ran them)."""
    from dreamalloc.report.results import label_of
    from dreamalloc.report.tables import episode_curve

    out: dict[tuple[str, str], dict[str, list]] = {}
    for sname, s in results["sets"].items():
        for tname, t in s["tasks"].items():
            c = {label_of(results): episode_curve(t["returns"])}
            if "hindsight_best" in t:
                c[f"hindsight best ({t['hindsight_best']['rule']})"] = episode_curve(t["hindsight_best"]["returns"])
                c["capacity bound"] = episode_curve(t["capacity_bound"])
            out[(sname, tname)] = c
    return out


# ------------------------------------------------------------------------------------------------------------------
# drawing helpers (numbers only; the figures are in charts.py)
# ------------------------------------------------------------------------------------------------------------------
def downsample(rgb: np.ndarray, width: int = MAP_WIDTH) -> np.ndarray:
    """[..., N, 3] colours -> [..., min(N, width), 3]: each output column is the mean colour of its cells."""
    n = rgb.shape[-2]
    if n <= width:
        return rgb
    edges = np.linspace(0, n, width + 1).astype(np.int64)
    csum = np.concatenate([np.zeros_like(rgb[..., :1, :]), np.cumsum(rgb, axis=-2)], axis=-2)
    total = csum[..., edges[1:], :] - csum[..., edges[:-1], :]
    return total / (edges[1:] - edges[:-1])[:, None]


def first_difference(maps: Sequence[np.ndarray]) -> int | None:
    """Index of the first step at which the occupancy of the given label maps ([steps, N] each) differs."""
    occ = np.stack([np.asarray(m) >= 0 for m in maps])
    differs = (occ != occ[:1]).any(axis=(0, 2))
    return int(np.argmax(differs)) if differs.any() else None


def summary_rows(runs: Sequence[MethodRun]) -> list[dict]:
    """One row per method: failed requests, and both fragmentation measures at the end."""
    rows = []
    for r in runs:
        failed = [f"{i + 1} ({r.requests[i]})" for i in np.flatnonzero(r.failed)]
        rows.append({"method": r.name, "failed": len(failed), "failed requests": ", ".join(failed) or "none",
                     "free runs / N": round(float(r.metrics["frag_runs"][-1]), 4),
                     "1 - largest free / free": round(float(r.metrics["frag_largest"][-1]), 4),
                     "utilisation": round(float(r.metrics["utilisation"][-1]), 4)})
    return rows


def placements(run: MethodRun) -> list[dict]:
    """Where each allocation of a playground run went: one row per request."""
    rows, k, failed_blocks = [], 0, set()
    for i, text in enumerate(run.requests):
        if text.startswith("f"):
            b = int(text[1:])
            res = f"nothing to free: block {b} was not allocated" if b in failed_blocks else "freed"
            rows.append({"request": i + 1, "asks": f"free block {b}", "result": res})
            continue
        k += 1
        cells = np.flatnonzero(run.maps[i + 1] == k)
        if run.failed[i]:
            failed_blocks.add(k)
        res = "failed: fits in no free run" if run.failed[i] else f"cells {cells[0]}-{cells[-1]}"
        rows.append({"request": i + 1, "asks": f"{text} cells (block {k})", "result": res})
    return rows


__all__ = ["DEFAULT_REQUESTS", "MANDAL_CELLS", "AppInputError", "MethodRun", "Op", "Replay", "adaptation_curves",
           "check_stream", "downsample", "first_difference", "layout_of", "load_checkpoint_agent", "parse_cells",
           "parse_layout", "parse_requests", "parse_stream_params", "placements", "read_results", "replayable_streams",
           "rule_names", "run_playground", "run_replay", "save_upload", "shipped_traces", "starting_layout",
           "summary_rows", "table_rows"]
