"""What train.py and evaluate.py do, behind Hydra: errors a user can cause end in one clear line."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dreamalloc.agents import agent_classes
from dreamalloc.agents.base import NonFiniteLossError
from dreamalloc.experiment.checkpoint import (
    CheckpointError,
    check_meta,
    config_differences,
    load_checkpoint,
    newest_readable,
)
from dreamalloc.experiment.config import from_container, make_core, register_configs, validate, with_nodes
from dreamalloc.experiment.evaluation import evaluate_mode, evaluate_suite
from dreamalloc.experiment.inference import load_into
from dreamalloc.experiment.logging import Logger
from dreamalloc.experiment.seeding import seed_everything, select_device
from dreamalloc.experiment.training import (
    TrainingError,
    build_agent,
    method_name,
    override_keys,
    run_checkpoint_dir,
    run_name,
    show_progress,
    task_overrides,
    train,
)

USER_ERRORS = (ValueError, OSError, CheckpointError, KeyError, NonFiniteLossError, TrainingError)

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


def _acting_overrides(stored) -> set[str]:
    """The ``agent.KEY`` overrides on the command line that evaluation may apply to a checkpoint's agent (its
    stored config ``stored``): its class's ``acting_keys`` (how it acts greedily, e.g. Dreamer's
    ``greedy_latent`` / ``greedy_ema``)."""
    agent = stored.get("agent") if isinstance(stored, dict) else None
    cls = agent_classes().get(agent.get("name")) if isinstance(agent, dict) else None
    allowed = {f"agent.{k}" for k in getattr(cls, "acting_keys", ())}
    return {k for k in override_keys(task_overrides()) if k in allowed}


def _trained_config(ckpt: Path, payload: dict, cfg: DictConfig, acting: set[str]) -> DictConfig:
    """The checkpoint's config, checked against the schemas; an env / agent / seed override on the command line
    that differs from it is refused (the agent is evaluated as it was trained), naming every such key, but for
    the agent's ``acting`` keys (``_acting_overrides``)."""
    stored = payload.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint {ckpt} records no config")
    try:
        trained = from_container(stored)
    except Exception as e:  # OmegaConf's errors name the key
        raise CheckpointError(f"checkpoint {ckpt}: its stored config does not fit this dreamalloc's schema: "
                              f"{e}") from e
    # agent=NAME only selects the agent (its schema, for agent.KEY overrides): it must name the checkpoint's
    keys = ["agent.name" if k == "agent" else k for k in override_keys(task_overrides())
            if k.split(".")[0] in ("env", "agent", "seed") and k not in acting]
    problems = config_differences(stored, OmegaConf.to_container(cfg, resolve=True), keys)
    if problems:
        raise CheckpointError(f"checkpoint {ckpt}: the command line asks for another env or agent than the one it "
                              "was trained with: " + "; ".join(problems) + ". Drop these overrides (the env, agent "
                              "and seed come from the checkpoint; suite=, eval.*, logger.* may be given)")
    return trained


def _trained_eval(trained: DictConfig, cfg: DictConfig) -> DictConfig:
    """The evaluation protocol the run was trained with (its ``eval`` node: trials, episodes per trial, seeds),
    with the command line's ``eval.*`` overrides on top."""
    ev = OmegaConf.create(OmegaConf.to_container(trained.eval, resolve=True))
    for key in override_keys(task_overrides()):
        if key.startswith("eval."):
            OmegaConf.update(ev, key[len("eval."):], OmegaConf.select(cfg, key), merge=True)
    return ev


def evaluate_main(cfg: DictConfig) -> float | None:
    from dreamalloc.experiment.reporting import print_results, write_evaluation, write_mode_results

    try:
        payload, step = None, 0
        if cfg.checkpoint:
            p = Path(cfg.checkpoint)
            p = run_checkpoint_dir(p) or p  # a run directory names its checkpoint folder
            found = newest_readable(p, warn=lambda m: print(m, file=sys.stderr)) if p.is_dir() else \
                (p, load_checkpoint(p))
            if found is None:
                raise FileNotFoundError(f"checkpoint={cfg.checkpoint}: no ckpt_*.safetensors file in that folder")
            ckpt, payload = found
            acting = {k: OmegaConf.select(cfg, k) for k in _acting_overrides(payload.get("config"))}
            trained = _trained_config(ckpt, payload, cfg, set(acting))
            # the agent and its env come from the checkpoint (but how it acts greedily, where the command line says);
            # the suite too unless given on the command line
            keep_suite = cfg.suite if _overridden("suite") else trained.suite
            cfg = with_nodes(cfg, {"env": trained.env, "agent": trained.agent, "seed": trained.seed,
                                   "suite": keep_suite, "eval": _trained_eval(trained, cfg)})
            for key, value in acting.items():
                OmegaConf.update(cfg, key, value, merge=True)
                print(f"evaluate: {key}={value} (the checkpoint's agent, acting as the command line says)")
            step = int(payload["step"])
        validate(cfg)
        device = select_device(cfg.device)
        seed_everything(int(cfg.seed))
        core = make_core(cfg.env, cfg.suite.train, 1, device)
        agent = build_agent(cfg, core, device)
        if payload is not None:
            check_meta(ckpt, payload.get("meta"), agent.meta())
            load_into(agent, payload, ckpt)  # a training checkpoint or a policy export
        out_dir = Path(cfg.run_dir)
        with Logger(out_dir, OmegaConf.to_container(cfg, resolve=True), mode=cfg.logger.mode,
                    project=cfg.logger.project, entity=cfg.logger.entity, name=f"eval_{run_name(cfg)}",
                    group=cfg.logger.group, tags=[*cfg.logger.tags, "eval"]) as logger:
            if cfg.eval.mode != "suite":  # a family's own mode (e.g. peak): its table, no held-out suite
                with torch.no_grad():
                    res = evaluate_mode(agent, cfg.env, cfg.eval, device, method_name(cfg), int(cfg.seed), step,
                                        label=cfg.label or method_name(cfg))
                print(write_mode_results(res, out_dir / "eval"))
                print(f"results: {out_dir / 'eval' / (res['mode'] + '.json')}")
                return None
            with torch.no_grad():
                res = evaluate_suite(agent, cfg.env, cfg.suite, cfg.eval, device, method_name(cfg),
                                     int(cfg.seed), step, label=cfg.label or method_name(cfg),
                                     progress=show_progress(cfg))
            write_evaluation(res, out_dir / "eval", logger, step)
    except USER_ERRORS as e:
        _fail(e)
    print(f"results: {out_dir / 'eval'}")
    return print_results(res)
