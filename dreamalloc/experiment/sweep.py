"""Validate every point of a sweep before its first job runs (``hydra.callbacks.validate_sweep`` in
conf/config.yaml).

Hydra's basic sweeper (which every launcher of this project uses: basic, joblib, submitit) expands the
overrides into jobs only when it launches them, so one bad point (``-m env.cells=0,64``) used to fail after
the points before it had trained. ``ValidateSweep.on_multirun_start`` expands the sweep exactly as
``BasicSweeper`` will (``hydra.sweeper.params`` first, then the command line's overrides), composes each
point's config with Hydra's own config loader and runs ``config.validate`` on it. A bad point stops the
sweep there with one message naming the point; no job has started. Points that resume a checkpoint or
evaluate one (``resume``, ``checkpoint``) take their config from the checkpoint and are checked by the job.
Other sweepers (Optuna, Nevergrad, ...) draw their points as they go and are left alone.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_points(config: DictConfig) -> list[list[str]]:
    """The override lists of the jobs the basic sweeper will launch for this multirun config."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(args), None)
    return [list(point) for batch in batches for point in batch]


def _is_set(v: Any) -> bool:
    return v not in (None, False, "false", "False", "", "null")


def validate_sweep(config: DictConfig) -> None:
    """Compose and validate every point; a bad one is a ``ValueError`` naming it."""
    from hydra.core.global_hydra import GlobalHydra

    from dreamalloc.experiment.config import validate

    loader = GlobalHydra.instance().config_loader()
    points = sweep_points(config)
    for i, point in enumerate(points):
        try:
            cfg = loader.load_sweep_config(config, point)
            if _is_set(cfg.get("resume")) or _is_set(cfg.get("checkpoint")):
                continue
            validate(cfg)
        except (ValueError, FileNotFoundError, KeyError, HydraException, OmegaConfBaseException) as e:
            what = " ".join(point) or "(no overrides)"
            raise ValueError(f"sweep job #{i} of {len(points)} ({what}): {e}; no job was started") from None


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return
        try:
            validate_sweep(config)
        except ValueError as e:
            print(f"dreamalloc: error: {e}", file=sys.stderr)
            sys.exit(2)


__all__ = ["ValidateSweep", "sweep_points", "validate_sweep"]
