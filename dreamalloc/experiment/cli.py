"""What train.py and evaluate.py do, behind Hydra: errors a user can cause end in one clear line."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dreamalloc.agents.base import NonFiniteLossError
from dreamalloc.experiment.checkpoint import CheckpointError, check_meta, latest_checkpoint, load_checkpoint
from dreamalloc.experiment.config import make_core, register_configs, validate, with_nodes
from dreamalloc.experiment.evaluation import evaluate_suite
from dreamalloc.experiment.logging import Logger
from dreamalloc.experiment.seeding import seed_everything, select_device
from dreamalloc.experiment.training import build_agent, method_name, run_name, train

USER_ERRORS = (ValueError, FileNotFoundError, CheckpointError, KeyError, NonFiniteLossError)

register_configs()


def _fail(e: Exception) -> None:
    print(f"dreamalloc: error: {e}", file=sys.stderr)
    sys.exit(2)


def train_main(cfg: DictConfig) -> float | None:
    try:
        out = train(cfg)
    except USER_ERRORS as e:
        _fail(e)
    from dreamalloc.experiment.reporting import print_results
    print(f"run directory: {out['run_dir']}\ncheckpoint: {out['checkpoint']}")
    for key, v in (out.get("forgetting") or {}).items():
        print(f"{key}: {v:.4g}")
    return print_results(out["results"])


def _overridden(name: str) -> bool:
    try:
        return any(o.split("=")[0].lstrip("+~") == name for o in HydraConfig.get().overrides.task)
    except ValueError:
        return False


def evaluate_main(cfg: DictConfig) -> float | None:
    from dreamalloc.experiment.reporting import print_results, write_evaluation

    try:
        payload, step = None, 0
        if cfg.checkpoint:
            p = Path(cfg.checkpoint)
            ckpt = latest_checkpoint(p) if p.is_dir() else p
            if ckpt is None:
                raise FileNotFoundError(f"checkpoint={cfg.checkpoint}: no ckpt_*.pt file in that folder")
            payload = load_checkpoint(ckpt)
            trained = OmegaConf.create(payload["config"])
            # the agent and its env come from the checkpoint; the suite too unless given on the command line
            keep_suite = cfg.suite if _overridden("suite") else trained.suite
            cfg = with_nodes(cfg, {"env": trained.env, "agent": trained.agent, "seed": trained.seed,
                                   "suite": keep_suite})
            step = int(payload["step"])
        validate(cfg)
        device = select_device(cfg.device)
        seed_everything(int(cfg.seed))
        core = make_core(cfg.env, cfg.suite.train, 1, device)
        agent = build_agent(cfg, core, device)
        if payload is not None:
            check_meta(ckpt, payload.get("meta"), agent.meta())
            agent.load_state_dict(payload["agent"])
        out_dir = Path(cfg.run_dir)
        with Logger(out_dir, OmegaConf.to_container(cfg, resolve=True), mode=cfg.logger.mode,
                    project=cfg.logger.project, entity=cfg.logger.entity, name=f"eval_{run_name(cfg)}",
                    group=cfg.logger.group, tags=[*cfg.logger.tags, "eval"]) as logger:
            with torch.no_grad():
                res = evaluate_suite(agent, cfg.env, cfg.suite, cfg.eval, device, method_name(cfg),
                                     int(cfg.seed), step)
            write_evaluation(res, out_dir / "eval", logger, step)
    except USER_ERRORS as e:
        _fail(e)
    print(f"results: {out_dir / 'eval'}")
    return print_results(res)
