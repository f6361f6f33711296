"""The adaptation evaluation protocol, the same for every method.

On each task of each held-out set: ``trials`` trials of K episodes, trial t on stream seed
``eval.seed + t`` (identical across methods and training seeds, so comparisons are paired). The agent's
recurrent state starts fresh at each trial and is kept across its K episodes. Alongside, on exactly the
same streams: every fixed rule of the env's family (the hindsight-best one is reported) and the family's bound
(the capacity bound of a compacting heap, the no-wait bound of load balancing), as the family registers them.
Trials are the independent units of the confidence intervals.

The references depend only on (family, task, env config, trials, K, seed), not on the agent, so with
``eval.baselines=cache`` (the default) they are computed once per process and reused by every later evaluation
of the same task (the periodic evaluations of a run, the phases of the forgetting protocol); ``always``
recomputes them on every call; ``off`` skips them: the task results then carry ``"baselines": "off"`` and no
``hindsight_best`` / ``capacity_bound``, and the tables leave those cells empty.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dreamalloc.agents.base import Agent
from dreamalloc.core.rollout import run_episodes
from dreamalloc.experiment.config import family_of, make_core, plain, tasks_of

SCHEMA = 1
BASELINES = ("cache", "always", "off")
_REFERENCES: dict[str, Any] = {}  # the in-memory cache of eval.baselines=cache: key -> References
_PROGRESS = [False]  # the default of evaluate_suite's progress bar (set_progress; training sets it from progress=)


def set_progress(show: bool) -> None:
    """Whether evaluations show a progress bar over their tasks when the caller does not say."""
    _PROGRESS[0] = bool(show)


def clear_reference_cache() -> None:
    """Forget every cached reference (the next evaluation recomputes them)."""
    _REFERENCES.clear()


def _reference_key(fam, env, task: dict, trials: int, k: int, seed: int, device) -> str:
    env = OmegaConf.to_container(env, resolve=True) if isinstance(env, DictConfig) else dict(env)
    env.pop("num_envs", None)  # the evaluation core has one row per trial, whatever the training envs
    return json.dumps([fam.kind, env, task, int(trials), int(k), int(seed), str(device)], sort_keys=True,
                      default=str)


def references(fam, core, env, task: dict, trials: int, k: int, seed: int, device, baselines: str = "cache"):
    """The family's references on ``core``'s streams: computed, or (``baselines="cache"``) reused from an earlier
    call with the same family, task, env config, trials, K, seed and device."""
    if baselines not in BASELINES:
        raise ValueError(f"eval.baselines={baselines!r}; choose one of {', '.join(BASELINES)}")
    if baselines == "always":
        return fam.references(core, trials, seed, k, device)
    key = _reference_key(fam, env, task, trials, k, seed, device)
    if key not in _REFERENCES:
        _REFERENCES[key] = fam.references(core, trials, seed, k, device)
    return copy.deepcopy(_REFERENCES[key])  # a caller may change what it got; the cache stays as computed


def agent_policy(agent: Agent, core, task: dict, trials: int, deterministic: bool):
    """The agent as a ``policy(obs, info)`` over ``trials`` envs, its recurrent state kept across calls (fresh
    per trial: the core flags trial starts); refuses an env of another shape than the agent's."""
    spec = core.spec
    if spec.obs_dim != agent.obs_dim or spec.n_actions != agent.n_actions:
        raise ValueError(f"the agent expects observations of {agent.obs_dim} values and {agent.n_actions} "
                         f"actions, but the evaluation env of task {task['name']!r} has {spec.obs_dim} and "
                         f"{spec.n_actions}; evaluate with the env config the agent was trained on")
    state = [agent.initial_state(trials)]

    def policy(obs, info):
        with torch.no_grad():
            a, state[0] = agent.act(obs, state[0], info, deterministic)
        return a

    return policy


def evaluate_task(agent: Agent, env, task: dict, trials: int, k: int, seed: int, device: torch.device,
                  deterministic: bool = True, timeline: bool = False, baselines: str = "cache") -> dict[str, Any]:
    """``trials`` trials of ``k`` episodes of the agent on one task; beside it, on the same streams, every fixed
    rule of the env's family (the hindsight-best one reported) and the family's bound (``baselines``: cache |
    always | off, see the module's docstring)."""
    if baselines not in BASELINES:
        raise ValueError(f"eval.baselines={baselines!r}; choose one of {', '.join(BASELINES)}")
    fam = family_of(env)
    core = make_core(env, [task], trials, device, trial_episodes=k)  # a trial is the K evaluation episodes
    policy = agent_policy(agent, core, task, trials, deterministic)
    res = run_episodes(core, policy, seed, k, frame=fam.frame if timeline else None)
    out: dict[str, Any] = {
        "returns": res["return"].tolist(),
        "metrics": {m: res[m].astype(float).tolist() for m in fam.metrics if m in res},
    }
    recovery = {}
    if "recovery_sum" in res:  # the stream switches task inside an episode: reward by steps since a switch
        recovery["agent"] = {"sum": res["recovery_sum"].tolist(), "count": res["recovery_count"].tolist()}
    if baselines == "off":
        out["baselines"] = "off"
    else:
        refs = references(fam, core, env, task, trials, k, seed, device, baselines)
        best = max(fam.rules, key=lambda r: float(refs.rules[r].mean()))
        extra = dict(refs.extra)
        recovery.update(extra.pop("recovery", {}))
        out.update({
            "hindsight_best": {"rule": best, "returns": refs.rules[best].tolist()},
            "heuristics": {r: float(v.mean()) for r, v in refs.rules.items()},
            **extra,
            "capacity_bound": np.asarray(refs.bound).tolist(),
        })
    if recovery:
        out["recovery"] = recovery
    if timeline and "timeline" in res:
        out["_timeline"] = res["timeline"]
    return out


def evaluate_suite(agent: Agent, env, suite, eval_cfg, device, method: str, seed: int, step: int,
                   label: str | None = None, progress: bool | None = None) -> dict:
    """The results document (schema in dreamalloc/report/results.py); timelines under ``_timelines``.
    ``label`` names the variant in comparisons (default: ``method``); ``progress``: a bar over the tasks (None:
    as ``set_progress`` last said)."""
    progress = _PROGRESS[0] if progress is None else progress
    results: dict[str, Any] = {"schema": SCHEMA, "method": method, "label": str(label or method), "seed": int(seed),
                               "suite": str(suite.name), "step": int(step),
                               "episodes_per_trial": int(eval_cfg.episodes_per_trial),
                               "sets": {}, "columns": list(family_of(env).report_columns)}
    baselines = str(eval_cfg.get("baselines", "cache"))
    timelines: dict[str, np.ndarray] = {}
    first = True
    todo = [(str(set_name), task) for set_name, tasks in suite.heldout.items() for task in tasks_of(tasks)]
    for set_name, task in tqdm(todo, desc=f"evaluating {label or method}", unit="task", disable=not progress,
                               file=sys.stderr, leave=False):
        set_out = results["sets"].setdefault(set_name, {"tasks": {}})
        r = evaluate_task(agent, env, task, int(eval_cfg.trials), int(eval_cfg.episodes_per_trial),
                          int(eval_cfg.seed), device, bool(eval_cfg.deterministic),
                          timeline=bool(eval_cfg.timeline) and first, baselines=baselines)
        if "_timeline" in r:
            timelines[f"{set_name}/{task['name']}"] = r.pop("_timeline")
            first = False
        set_out["tasks"][task["name"]] = r
    results["_timelines"] = timelines
    return results


def validation_return(agent: Agent, env, suite, eval_cfg, device: torch.device) -> float:
    """Model selection's score (``eval.select_every``): the agent's mean return, acting as the evaluation does,
    over ``eval.select_trials`` trials of K episodes on each of the suite's *training* tasks (never a held-out
    set), on stream seeds ``eval.select_seed + t``, which neither training nor the evaluation uses. No
    references are computed (the score only ranks the agent's own weights against each other)."""
    trials, k, seed = int(eval_cfg.select_trials), int(eval_cfg.episodes_per_trial), int(eval_cfg.select_seed)
    means = [float(np.mean(evaluate_task(agent, env, task, trials, k, seed, device, bool(eval_cfg.deterministic),
                                         baselines="off")["returns"]))
             for task in tasks_of(suite.train)]
    return float(np.mean(means))


def evaluate_mode(agent: Agent, env, eval_cfg, device, method: str, seed: int, step: int,
                  label: str | None = None) -> dict:
    """``eval.mode`` other than ``suite`` (checked by ``config.validate``): the env family's own evaluation
    (``EnvFamily.eval_modes``) of the agent, with ``eval.mode_params``. Returns the mode's document (``rows`` and
    ``columns`` for its table)."""
    mode, params, deterministic = str(eval_cfg.mode), plain(eval_cfg.mode_params), bool(eval_cfg.deterministic)

    def make_policy(core):
        return agent_policy(agent, core, {"name": mode}, core.B, deterministic)

    body = family_of(env).eval_modes[mode](plain(env), make_policy, params, device, str(label or method))
    return {"schema": SCHEMA, "mode": mode, "method": method, "label": str(label or method), "seed": int(seed),
            "step": int(step), "mode_params": params, **body}


def summary(results: dict) -> dict[str, float]:
    """Flat scalars for the logger: mean, first- and last-episode return per set/task."""
    out = {}
    for set_name, s in results["sets"].items():
        for task, t in s["tasks"].items():
            r = np.asarray(t["returns"], dtype=float)
            out[f"eval/{set_name}/{task}/return"] = float(r.mean())
            out[f"eval/{set_name}/{task}/return_first"] = float(r[:, 0].mean())
            out[f"eval/{set_name}/{task}/return_last"] = float(r[:, -1].mean())
    return out
