"""The allocation family's registration (``env.kind: alloc``): its config schema, how its core is built from an env
node and a task list, its fixed policies (the placement rules), its references (every rule and the capacity
bound on the same streams), the metrics its tables report and the heap picture of its timelines."""

from __future__ import annotations

import torch

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.alloc.heap import RULES, FreeRuns, HeapBatch, place_address
from dreamalloc.alloc.peak import peak_mode
from dreamalloc.alloc.references import capacity_bound, env_kwargs, heuristic_returns, switching_oracle
from dreamalloc.alloc.workloads import ALIASES, STREAMS, make_stream
from dreamalloc.core.checks import COUNT, FINITE, NONNEG, ge
from dreamalloc.core.family import EnvFamily, References, core_builder, env_schema, register_family

METRICS = ("frag_largest", "frag_runs", "utilisation", "allocations", "free_runs", "largest_free", "dropped")


AllocEnvConf = env_schema(  # conf/env/alloc*.yaml: AllocConfig's options but the stream (the suite gives it)
    "AllocEnvConf", AllocConfig, kind="alloc", exclude=("stream", "stream_params", "ideal"),
    types={"heuristics": list[str]},
    ranges={"num_envs": COUNT, "cells": ge(2), "holes": COUNT, "history": NONNEG, "hole_features": NONNEG,
            "alloc_reward": FINITE, "invalid_reward": FINITE, "drop_reward": FINITE, "max_allocs": COUNT,
            "trial_episodes": COUNT})


def alloc_config(env: dict, tasks: list[dict]) -> AllocConfig:
    """The AllocConfig of an env node plus a task list (one task: its stream; several: a task stream)."""
    e = {k: v for k, v in env.items() if k not in ("num_envs", "kind")}
    e["heuristics"] = tuple(e["heuristics"])
    if len(tasks) == 1 and not tasks[0].get("ranges") and not tasks[0].get("choices"):
        stream, params = tasks[0]["stream"], dict(tasks[0].get("params") or {})
    else:
        stream, params = "tasks", {"tasks": tasks}
    return AllocConfig(stream=stream, stream_params=params, **e).validate()


make_core = core_builder(alloc_config, AllocCore)


def references(core: AllocCore, trials: int, seed: int, k: int, device) -> References:
    """Every placement rule and the capacity bound on the streams of ``core``'s config, trials x k episodes; on
    streams that switch task inside an episode also the switching oracle and every rule's recovery curve."""
    kw = env_kwargs(core.cfg)
    runs = {r: heuristic_returns(r, trials, seed, device, k, **kw) for r in RULES}
    rules = {r: res["return"].reshape(trials, k) for r, res in runs.items()}
    bound = capacity_bound(trials, seed, device, k, **kw)["return"].reshape(trials, k)
    extra = {}
    oracle = switching_oracle(trials, seed, device, k, **kw)
    if oracle is not None:  # a stream that switches task inside an episode: the oracle and recovery curves
        extra["switching_oracle"] = {"rules": oracle["rules"], "returns": oracle["return"].reshape(trials, k).tolist()}
        extra["recovery"] = {name: {"sum": res["recovery_sum"].tolist(), "count": res["recovery_count"].tolist()}
                             for name, res in [*runs.items(), ("switching oracle", oracle)]}
    return References(rules, bound, extra)


class PlacementRule:
    """A fixed placement rule as a policy, in any action space: in the heuristic space its index among the env's
    rules; in the address and hole spaces the address (or the hole) the rule picks on the heap that the
    observation shows (its occupancy bitmap and request; the roving pointer of next fit is not observed, so next
    fit needs the heuristic space)."""

    def __init__(self, rule: str, cfg: AllocConfig, device="cpu"):
        if rule not in RULES:
            raise ValueError(f"unknown placement rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule, self.cfg, self.device = rule, cfg, torch.device(device)
        self.index = None
        if cfg.action == "heuristic":
            if rule not in cfg.heuristics:
                raise ValueError(f"placement rule {rule!r} is not among the env's heuristic actions "
                                 f"{list(cfg.heuristics)}; add it to env.heuristics")
            self.index = list(cfg.heuristics).index(rule)
        elif not cfg.bitmap:
            raise ValueError("a placement rule in the address / hole action space needs env.bitmap=true")
        elif rule == "next":
            raise ValueError("next fit needs the heap's roving pointer, which is not observed; use the heuristic "
                             "action space for next fit")

    def initial_state(self, batch: int):
        return None

    def act(self, obs, state, info):
        cfg, B, N = self.cfg, obs.shape[0], self.cfg.cells
        if self.index is not None:
            return torch.full((B,), self.index, dtype=torch.long, device=obs.device), state
        occ = obs[:, :N] > 0.5
        size = (obs[:, N] * (1.0 if cfg.size_scale == "raw" else N)).round().long()
        runs = FreeRuns.of(occ)
        addr = place_address(runs, size, self.rule, torch.zeros(B, dtype=torch.long, device=obs.device), cfg.align)
        if cfg.action == "address":
            return addr.clamp(min=0), state
        fits = runs.fitting(size)
        rank = runs.rank(fits)  # the chosen run's rank among the runs that fit = the hole index
        end = runs.start + runs.length - size[runs.heap]
        chosen = fits & ((runs.start if cfg.align == "start" else end) == addr[runs.heap])
        hole = torch.zeros(B, dtype=torch.long, device=obs.device)
        hole[runs.heap[chosen]] = rank[chosen] - 1
        return hole.clamp(max=cfg.holes - 1), state

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def fixed_policy(rule: str, cfg: AllocConfig, seed: int = 0, device="cpu") -> PlacementRule:
    return PlacementRule(rule, cfg, device)


def check_task(env: dict, task: dict) -> None:
    """Build the task's stream for one heap (a missing trace, an unknown stream, a bad parameter fail here)."""
    make_stream(task["stream"], 1, int(env["cells"]), "cpu", **task["params"])


# Step temporaries of the allocation env per heap cell beyond its state (the free-run view, masks): measured
# as peak RSS minus state on CPU with 1-4 heaps of 1-4 M cells (62-68 bytes per cell in all, 2026-12).
STEP_BYTES_PER_CELL = 12


def heap_bytes_per_cell() -> int:
    """Bytes of the heap state per heap and cell, read off a small ``HeapBatch`` (follows its tensors)."""
    n = 64
    h = HeapBatch(1, n, "cpu")
    return sum(t.element_size() * t.numel() for t in vars(h).values() if isinstance(t, torch.Tensor)
               and t.numel() == n) // n


def _stream_cell_bytes(tasks) -> int:
    """Per-heap-cell state of the streams of a task list (a task stream keeps one sub-stream per task)."""
    total = 0
    for t in tasks:
        cls = STREAMS.get(ALIASES.get(str(t.get("stream")), str(t.get("stream"))))
        total += int(getattr(cls, "CELL_BYTES", 0) or 0)
        sub = (t.get("params") or {}).get("tasks") if isinstance(t.get("params"), dict) else None
        if sub:
            total += _stream_cell_bytes(sub)
    return total


def footprint(env: dict, tasks: list[dict], units: int) -> tuple[int, str]:
    N = int(env["cells"])
    per_cell = heap_bytes_per_cell() + 4 * bool(env["bitmap"]) + STEP_BYTES_PER_CELL + _stream_cell_bytes(tasks)
    return units * N * per_cell, f"{N:,} cells x {per_cell} B (heap state, observation, step buffers)"


def heap_frame(core: AllocCore) -> torch.Tensor:
    """Heap 0's owner map (one block id per cell), for timelines."""
    return core.heaps.owner[0].cpu().clone()


def peak(env: dict, make_policy, params: dict, device, method: str) -> dict:
    """``eval.mode=peak`` (alloc/peak.py): whole recorded traces on a heap sized from their peak, the agent (on
    its own env options) beside every rule."""
    base = alloc_config(env, [{"stream": "trace", "params": {}}])
    return peak_mode(base, make_policy, params, device, method)


FAMILY = register_family(EnvFamily(
    kind="alloc", schema=AllocEnvConf, make_core=make_core, env_config=alloc_config, references=references,
    fixed_policy=fixed_policy, rules=tuple(RULES), metrics=METRICS, frame=heap_frame, agent_names=("heuristic",),
    streams=lambda stream: stream in STREAMS or stream in ALIASES, env_choices=("alloc256", "alloc64"),
    report_columns=("frag_largest", "frag_runs"), check_task=check_task, footprint=footprint,
    eval_modes={"peak": peak}))

__all__ = ["FAMILY", "METRICS", "STEP_BYTES_PER_CELL", "AllocEnvConf", "PlacementRule", "alloc_config", "footprint",
           "heap_bytes_per_cell", "make_core"]
