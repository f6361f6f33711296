"""The training loop shared by every method: env steps, periodic evaluation, logging, checkpoints, resume.

A checkpoint holds the resolved config, counters, all RNG states, the env core's state (heaps, streams,
episode counters) and the agent's state, so ``resume`` continues a killed run where its last checkpoint
left it, with the original config.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dreamalloc.agents import make_agent
from dreamalloc.agents.base import NonFiniteLossError
from dreamalloc.envs.core import AllocCore
from dreamalloc.experiment.checkpoint import (
    check_meta,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from dreamalloc.experiment.config import make_core, validate, with_nodes
from dreamalloc.experiment.evaluation import evaluate_suite, summary
from dreamalloc.experiment.logging import Logger
from dreamalloc.experiment.seeding import rng_state, seed_everything, select_device, set_rng_state

TRAIN_SEED_STRIDE = 100_003  # heap b of a run with seed s trains on stream seed s * stride + b


def run_name(cfg: DictConfig) -> str:
    return cfg.run_name or f"{cfg.agent.name}_{cfg.suite.name}_s{cfg.seed}"


def method_name(cfg: DictConfig) -> str:
    if cfg.agent.name in ("heuristic", "dispatch"):
        return f"{cfg.agent.name}:{cfg.agent.rule}"
    return str(cfg.agent.name)


def training_phases(cfg: DictConfig) -> list[tuple[str, Any, int]]:
    """[(phase, training tasks, last env step)]: one phase of ``steps``, or with protocol=forgetting two
    (suite.train, then suite.train_b), ``steps`` each."""
    if cfg.protocol == "forgetting":
        return [("A", cfg.suite.train, int(cfg.steps)), ("B", cfg.suite.train_b, 2 * int(cfg.steps))]
    return [("train", cfg.suite.train, int(cfg.steps))]


def forgetting_report(after_a: dict, after_b: dict) -> dict[str, float]:
    """Per held-out task: mean return after phase A, after phase B, and the drop (A minus B: > 0 is forgetting)."""
    out = {}
    for set_name, s in after_a["sets"].items():
        for task, t in s["tasks"].items():
            a = float(np.mean(t["returns"]))
            b = float(np.mean(after_b["sets"][set_name]["tasks"][task]["returns"]))
            out[f"forgetting/{set_name}/{task}/after_A"] = a
            out[f"forgetting/{set_name}/{task}/after_B"] = b
            out[f"forgetting/{set_name}/{task}/drop"] = a - b
    return out


def build_agent(cfg: DictConfig, core: AllocCore, device: torch.device):
    hp = {k: v for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items() if k != "name"}
    return make_agent(cfg.agent.name, core.cfg.obs_dim, core.cfg.n_actions, core.cfg, device, **hp)


def find_resume(cfg: DictConfig) -> Path | None:
    """The checkpoint ``resume`` points at: true = the latest of this run name; a path = a checkpoint file,
    a checkpoint folder, or a run directory (whose checkpoint folder is recorded in run_info)."""
    if cfg.resume in (False, None, "false", "False"):
        return None
    if cfg.resume in (True, "true", "True"):
        found = latest_checkpoint(Path(cfg.checkpoint_dir) / run_name(cfg))
        if found is None:
            raise FileNotFoundError(f"resume=true but {Path(cfg.checkpoint_dir) / run_name(cfg)} holds no "
                                    "checkpoint; start without resume or pass resume=PATH")
        return found
    p = Path(str(cfg.resume))
    if p.is_file():
        return p
    for d in (p, p / "checkpoints"):
        found = latest_checkpoint(d) if d.is_dir() else None
        if found is not None:
            return found
    link = p / "checkpoint_dir.txt"
    if link.is_file():
        found = latest_checkpoint(Path(link.read_text().strip()))
        if found is not None:
            return found
    raise FileNotFoundError(f"resume={cfg.resume}: no checkpoint found there (a ckpt_*.pt file, a folder of "
                            "them, or a run directory)")


def train(cfg: DictConfig) -> dict[str, Any]:
    resume_from = find_resume(cfg)
    payload = None
    if resume_from is not None:
        payload = load_checkpoint(resume_from)
        # the original run's config wins, node by node (its agent or suite may differ from today's defaults)
        cfg = with_nodes(cfg, {**payload["config"], "resume": cfg.resume, "progress": cfg.progress})
    validate(cfg)
    device = select_device(cfg.device)
    seed_everything(int(cfg.seed))
    run_dir = Path(payload["run_dir"]) if payload else Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(cfg.checkpoint_dir) / run_name(cfg)
    (run_dir / "checkpoint_dir.txt").write_text(str(ckpt_dir.resolve()) + "\n")
    B = int(cfg.env.num_envs)
    phases = training_phases(cfg)
    total = phases[-1][2]
    phase = next(i for i, p in enumerate(phases) if p[2] > (int(payload["step"]) if payload else 0) or
                 i == len(phases) - 1)
    core = make_core(cfg.env, phases[phase][1], B, device)
    agent = build_agent(cfg, core, device)
    step, episodes = 0, 0
    if payload is not None:
        meta = agent.meta()
        check_meta(resume_from, payload.get("meta"), meta)  # a clear error if it is another agent / env shape
        agent.load_state_dict(payload["agent"])
        core.load_state_dict(payload["env"])
        set_rng_state(payload["rng"])
        step, episodes = int(payload["step"]), int(payload["episodes"])
        obs, info = core.current() if hasattr(core, "current") else (core._observe(), core._info(core.runs))
    else:
        obs, info = core.reset(seed=int(cfg.seed) * TRAIN_SEED_STRIDE)
    def every(key: str) -> int:
        return int(OmegaConf.select(cfg, key))

    def next_after(key: str) -> int | None:  # the first multiple of the interval past the current step
        return (step // every(key) + 1) * every(key) if every(key) else None

    next_eval, next_ckpt = next_after("eval.every"), next_after("checkpoint_every")
    next_log = step + every("logger.every")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = Logger(run_dir, resolved, mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                    name=run_name(cfg), group=cfg.logger.group, tags=list(cfg.logger.tags),
                    resume_id=payload.get("wandb_id") if payload else None)

    def save(at: int) -> Path:
        path = save_checkpoint(checkpoint_path(ckpt_dir, at), {
            "config": resolved, "run_dir": str(run_dir), "step": at, "episodes": episodes,
            "agent": agent.state_dict(include_replay=bool(cfg.save_replay)), "env": core.state_dict(),
            "rng": rng_state(),
            "meta": agent.meta(), "wandb_id": logger.wandb_run_id})
        prune_checkpoints(ckpt_dir, int(cfg.keep_checkpoints))
        return path

    def run_eval(at: int) -> dict:
        res = evaluate_suite(agent, cfg.env, cfg.suite, cfg.eval, device, method_name(cfg), int(cfg.seed), at)
        from dreamalloc.experiment.reporting import write_evaluation
        write_evaluation(res, run_dir / "eval" / f"step_{at:012d}", logger, at)
        logger.log(summary(res), step=at)
        return res

    show = cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
    bar = tqdm(total=total, initial=min(step, total), disable=not show, unit="step",
               dynamic_ncols=True, desc=run_name(cfg))
    recent: deque[float] = deque(maxlen=100)
    state = agent.initial_state(B)
    t0, s0 = time.perf_counter(), step
    last_eval = None
    phase_evals: dict[str, dict] = {}
    try:
        while step < total:
            if step >= phases[phase][2]:  # protocol=forgetting: phase A is over; evaluate, move on to B
                res = run_eval(step)
                phase_evals[phases[phase][0]] = res
                (run_dir / f"eval_after_{phases[phase][0]}.txt").write_text(f"step_{step:012d}\n")
                phase += 1
                core = make_core(cfg.env, phases[phase][1], B, device)
                obs, info = core.reset(seed=int(cfg.seed) * TRAIN_SEED_STRIDE + phase * 7_919)
                state = agent.initial_state(B)
            action, state = agent.act(obs, state, info)
            next_obs, reward, term, trunc, info = core.step(action)
            final_obs = info.get("final_obs", next_obs)
            agent.observe(obs, action, reward, term, trunc, final_obs, info)
            obs = next_obs
            step += B
            if "episode" in info:
                done = info["_episode"]
                episodes += int(done.sum())
                recent.extend(info["episode"]["r"][done].tolist())
            try:
                upd = agent.update(step)
            except NonFiniteLossError as e:  # raised before any parameter changed: the agent is still good
                path = save(step)
                raise NonFiniteLossError(f"{e}; training stopped at step {step}, the last good state is saved "
                                         f"in {path}") from e
            bar.update(B)
            if step >= next_log or step >= total:
                next_log = step + every("logger.every")
                line = {"train/episodes": episodes, **{f"train/{k}": float(v) for k, v in upd.items()}}
                if recent:
                    line["train/return"] = float(np.mean(recent))
                logger.log(line, step=step)
                sps = (step - s0) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{line.get('train/return', float('nan')):.2f}")
            if next_eval is not None and step >= next_eval and step < total:
                next_eval += every("eval.every")
                last_eval = run_eval(step)
            if next_ckpt is not None and step >= next_ckpt and step < total:
                next_ckpt += every("checkpoint_every")
                save(step)
        bar.close()
        path = save(step)
        last_eval = run_eval(step)
        extra = {}
        if cfg.protocol == "forgetting" and "A" in phase_evals:
            extra = forgetting_report(phase_evals["A"], last_eval)
            (run_dir / "forgetting.json").write_text(json.dumps(extra, indent=1) + "\n")
            logger.log(extra, step=step)
        logger.log_summary({"steps": step, "episodes": episodes, "checkpoint": str(path),
                            **summary(last_eval), **extra})
    finally:
        bar.close()
        logger.close()
    return {"run_dir": str(run_dir), "checkpoint": str(path), "step": step, "episodes": episodes,
            "results": last_eval, "forgetting": extra}
