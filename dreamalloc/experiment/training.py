"""The training loop shared by every method: env steps, periodic evaluation, logging, checkpoints, resume.

A checkpoint holds the resolved config, counters, all RNG states, the env core's state (heaps, streams,
episode counters), the agent's state and the loop's own state (the rolling return window, the next log /
evaluation / checkpoint steps, how many metric lines were written), so ``resume`` continues a killed run where
its last checkpoint left it and writes the same ``metrics.jsonl`` as an uninterrupted run.

Every run owns its checkpoint folder, ``{checkpoint_dir}/{run_name}``: the run name is
``{agent}_{suite}_s{seed}`` followed by the command-line overrides that make it a different run (so the points
of a sweep never share a folder), and a fresh run never writes into a folder that holds another run's
checkpoints (it takes ``NAME_v2``, ``NAME_v3``, ... instead). Pruning deletes only files this run wrote and
never the one it just saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dreamalloc.agents import agent_classes, make_agent
from dreamalloc.agents.base import NonFiniteLossError, nonfinite_parameter
from dreamalloc.core.driver import Driver
from dreamalloc.core.spec import FINAL_INFO
from dreamalloc.experiment.checkpoint import (
    CheckpointError,
    best_path,
    check_meta,
    check_writable,
    checkpoint_path,
    config_differences,
    list_best,
    list_checkpoints,
    load_checkpoint,
    newest_readable,
    prune_checkpoints,
    save_checkpoint,
)
from dreamalloc.experiment.config import family_of, from_container, make_core, validate
from dreamalloc.experiment.evaluation import evaluate_suite, set_progress, summary, validation_return
from dreamalloc.experiment.logging import Logger
from dreamalloc.experiment.seeding import rng_preserved, rng_state, seed_everything, select_device, set_rng_state
from dreamalloc.report.results import write_json

TRAIN_SEED_STRIDE = 100_003  # heap b of a run with seed s trains on stream seed s * stride + b
# Keys a resumed run may change (each change is printed); any other difference from the checkpoint is refused.
RESUME_SAFE = ("steps", "agent.total_steps", "logger", "eval", "progress", "device", "checkpoint_every",
               "keep_checkpoints", "save_replay", "on_nonfinite", "resume", "run_dir", "checkpoint_dir",
               "run_name", "label", "hydra")


class TrainingError(RuntimeError):
    """Training stopped on an error outside the learner (a full disk, an interrupt); says what was saved."""


class CheckpointWriteError(OSError):
    """Saving a checkpoint failed (the previous checkpoints are intact)."""


def task_overrides() -> list[str]:
    """The command line's overrides (``key=value``) when running under Hydra, else an empty list."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


def override_keys(overrides: list[str]) -> list[str]:
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o or o.startswith("~")]


def override_suffix(cfg: DictConfig, overrides: list[str] | None = None) -> str:
    """The overrides that change what is trained, as one path-safe string (``agent.lr-0.001__env.cells-128``;
    a digest when long); empty when there are none."""
    parts = []
    for o in sorted(overrides or []):
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key in ("seed", "checkpoint") or any(key == k or key.startswith(k + ".") for k in RESUME_SAFE):
            continue
        if (key == "agent" and value == cfg.agent.name) or (key == "suite" and value == cfg.suite.name):
            continue  # already in the name
        parts.append(re.sub(r"[^A-Za-z0-9._-]", "_", f"{key}-{value}"))  # no '=' or ',': Hydra-safe as a path
    suffix = "__".join(parts)
    if len(suffix) > 64:  # a long sweep point: a stable digest of it instead
        suffix = "h" + hashlib.sha256(suffix.encode()).hexdigest()[:10]
    return suffix


def run_name(cfg: DictConfig, overrides: list[str] | None = None) -> str:
    """``cfg.run_name``, or ``{agent}_{suite}_s{seed}`` plus the overrides that change what is trained."""
    if cfg.run_name:
        return str(cfg.run_name)
    base = f"{cfg.agent.name}_{cfg.suite.name}_s{cfg.seed}"
    suffix = override_suffix(cfg, overrides)
    return f"{base}__{suffix}" if suffix else base


def run_label(cfg: DictConfig, overrides: list[str] | None = None) -> str:
    """What comparisons group a run's evaluations by: ``cfg.label``, or the method plus the overrides that
    change what is trained (``ppo__agent.lr-0.001``), so the points of a sweep are told apart and its seeds
    are grouped together."""
    if OmegaConf.select(cfg, "label", default=None):
        return str(cfg.label)
    suffix = override_suffix(cfg, overrides)
    return f"{method_name(cfg)}__{suffix}" if suffix else method_name(cfg)


def show_progress(cfg: DictConfig) -> bool:
    """Whether progress bars are shown: ``progress=on``, or ``auto`` with stderr a terminal."""
    return cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())


def method_name(cfg: DictConfig) -> str:
    if getattr(agent_classes().get(cfg.agent.name), "fixed", False):
        return f"{cfg.agent.name}:{cfg.agent.rule}"
    return str(cfg.agent.name)


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


def build_agent(cfg: DictConfig, core, device: torch.device):
    """The agent of ``cfg.agent`` for ``core``: it sees the core's ``EnvSpec``; a fixed-rule agent (heuristic,
    dispatch) gets its rule from the env's family."""
    hp = {k: v for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items() if k != "name"}
    spec = core.spec
    if getattr(agent_classes().get(cfg.agent.name), "fixed", False):
        fam = family_of(cfg.env)
        check_fixed_agent(cfg.agent.name, str(hp.get("rule")), fam)
        hp["policy"] = fam.fixed_policy(hp["rule"], core.cfg, int(hp.get("seed", 0)), device)
    return make_agent(cfg.agent.name, spec.obs_dim, spec.n_actions, spec, device, **hp)


def check_fixed_agent(name: str, rule: str, fam) -> None:
    """A fixed-rule agent runs on the family whose rules it plays, with one of its rules."""
    from dreamalloc.core.family import FAMILIES

    if name not in fam.agent_names:
        owner = [f for f in FAMILIES.values() if name in f.agent_names]
        other = f" (the rules of the {owner[0].kind} family)" if owner else ""
        use = f"; on env.kind={fam.kind!r} use agent={'|'.join(fam.agent_names)}" if fam.agent_names else ""
        raise ValueError(f"config error: agent={name} plays fixed rules of another env family{other}{use}")
    if rule not in fam.rules:
        raise ValueError(f"config error: agent.rule={rule!r} must be one of {', '.join(fam.rules)}")


# --------------------------------------------------------------------------------------------- folders

def _versions(base: Path) -> list[Path]:
    """``base``, ``base_v2``, ``base_v3``, ... that exist, in version order."""
    found = [(1, base)] if base.is_dir() else []
    for p in base.parent.glob(f"{base.name}_v*"):
        m = re.fullmatch(re.escape(base.name) + r"_v(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def fresh_checkpoint_dir(cfg: DictConfig, name: str) -> Path:
    """The run's own folder: ``{checkpoint_dir}/{name}``, or the first ``_vN`` of it not used by another run."""
    base = Path(cfg.checkpoint_dir) / name
    n = 1
    while True:
        d = base if n == 1 else base.with_name(f"{base.name}_v{n}")
        taken = d.exists() and bool(list_checkpoints(d) or (d / "run.json").exists() or any(d.glob("ckpt_*.pt")))
        if not taken:
            try:  # claimed atomically: two runs started at once (a parallel sweep) never share a folder
                d.mkdir(parents=True, exist_ok=True)
                with open(d / "run.json", "x"):
                    pass
            except FileExistsError:
                taken = True
            except OSError:
                pass  # an unwritable folder: check_writable says so, naming it
        if not taken:
            if n > 1:
                print(f"dreamalloc: {base} belongs to an earlier run; this run's checkpoints go to {d} "
                      f"(resume=true continues the newest)", file=sys.stderr)
            return d
        n += 1


def release_checkpoint_dir(d: Path) -> None:
    """Undo ``fresh_checkpoint_dir``'s claim of a folder in which nothing was written (a run that failed to start)."""
    claim = d / "run.json"
    if claim.is_file() and claim.stat().st_size == 0:
        claim.unlink()
        if not any(d.iterdir()):
            d.rmdir()


RUN_CLAIM = ".running"  # in a run directory while a run writes there (removed when it ends)


def _claim_is_stale(claim: Path) -> bool:
    """A claim whose process is gone (killed runs leave theirs behind) or that cannot be read."""
    try:
        pid = int(json.loads(claim.read_text())["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return not claim.exists() or claim.stat().st_size > 0  # a claim being written right now is not stale
    return False


def claim_run_dir(run_dir: Path, resumed: bool = False) -> Path:
    """A run's output folder, held while it runs: ``run_dir``, or, for a fresh run, the first ``run_dir_N`` no
    running run holds. Two runs started in the same second get the same Hydra folder name; without this claim
    their metrics and evaluations would overwrite each other. A folder a finished (or killed) run left behind is
    reused, as before; a resumed run always takes its own folder back."""
    text = json.dumps({"pid": os.getpid(), "command": list(sys.argv)}) + "\n"
    n = 1
    while True:
        d = run_dir if n == 1 else run_dir.with_name(f"{run_dir.name}_{n}")
        d.mkdir(parents=True, exist_ok=True)
        claim = d / RUN_CLAIM
        try:
            with open(claim, "x") as f:  # atomic: exactly one run gets each folder
                f.write(text)
        except FileExistsError:
            if resumed or _claim_is_stale(claim):
                claim.write_text(text)
            else:
                n += 1
                continue
        if d != run_dir:
            log.warning("run directory %s is held by another run (started at the same time?): this run writes to %s",
                        run_dir, d)
        return d


def release_run_dir(run_dir: Path) -> None:
    (Path(run_dir) / RUN_CLAIM).unlink(missing_ok=True)


def run_checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The checkpoint folder of the run in ``run_dir`` (recorded in its ``checkpoint_dir.txt``), or None."""
    link = Path(run_dir) / "checkpoint_dir.txt"
    return Path(link.read_text().strip()) if link.is_file() else None


def find_resume(cfg: DictConfig, overrides: list[str] | None = None) -> tuple[Path, dict] | None:
    """(checkpoint, payload) that ``resume`` points at, falling back past unreadable newer files: true = the
    newest run of this run name; a path = a checkpoint file, a checkpoint folder, or a run directory."""
    if cfg.resume in (False, None, "false", "False"):
        return None
    if cfg.resume in (True, "true", "True"):
        base = Path(cfg.checkpoint_dir) / run_name(cfg, overrides)
        for d in reversed(_versions(base)):
            found = newest_readable(d, warn=_warn)
            if found is not None:
                return found
        raise FileNotFoundError(f"resume=true but {base} holds no checkpoint of this run name (the run name "
                                f"includes the command-line overrides); start without resume, pass the same "
                                f"overrides as the run you continue, or pass resume=PATH")
    p = Path(str(cfg.resume))
    if p.is_file():
        from dreamalloc.experiment.checkpoint import load_checkpoint

        return p, load_checkpoint(p)
    candidates = [p, p / "checkpoints"]
    if run_checkpoint_dir(p) is not None:
        candidates.insert(0, run_checkpoint_dir(p))
    for d in candidates:
        found = newest_readable(d, warn=_warn) if d.is_dir() else None
        if found is not None:
            return found
    raise FileNotFoundError(f"resume={cfg.resume}: no checkpoint found there (a ckpt_*.safetensors file, a folder "
                            "of them, or a run directory)")


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def resumed_config(cfg: DictConfig, payload: dict, path: Path, overrides: list[str]) -> DictConfig:
    """The checkpoint's own config, typed and checked against today's schemas (an unknown key or a bad value
    is an error), with the command line's overrides of ``RESUME_SAFE`` keys applied (and printed). An override
    of any other key that differs from the checkpoint is refused, naming every such key."""
    stored = payload.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint {path} records no config")
    try:
        base = from_container(stored)
    except Exception as e:  # OmegaConf's errors name the key
        raise CheckpointError(f"checkpoint {path}: its stored config does not fit this dreamalloc's schema: "
                              f"{e}") from e
    here = OmegaConf.to_container(cfg, resolve=True)
    keys = [k for k in override_keys(overrides) if k.split(".")[0] != "hydra"]
    unsafe = [k for k in keys if not any(k == s or k.startswith(s + ".") for s in RESUME_SAFE)]
    problems = config_differences(stored, here, unsafe, ignore=RESUME_SAFE)
    if problems:
        raise CheckpointError(f"checkpoint {path} was trained with a different config than this command asks for: "
                              + "; ".join(problems) + ". A resumed run keeps its config; only "
                              + ", ".join(RESUME_SAFE[:-1]) + " may change")
    for k in keys:
        if k in unsafe:
            continue
        old, new = OmegaConf.select(base, k, default=None), OmegaConf.select(cfg, k, default=None)
        if k in ("run_dir", "checkpoint_dir", "run_name", "resume") or old == new:
            continue
        print(f"dreamalloc: resume: {k} {old!r} -> {new!r}", file=sys.stderr)
        if isinstance(new, DictConfig):
            OmegaConf.update(base, k, OmegaConf.to_container(new, resolve=True), merge=True)
        else:
            OmegaConf.update(base, k, new, merge=False)
    base.resume, base.progress = cfg.resume, cfg.progress
    return base


# --------------------------------------------------------------------------------------------- training

@dataclass
class Phase:
    """A training phase of a protocol: train on ``tasks`` until env step ``until``, evaluate at its end."""

    name: str
    tasks: Any
    until: int


def protocol_phases(cfg: DictConfig) -> list[Phase]:
    """The training phases of ``cfg.protocol``: one phase of ``steps`` (standard, adaptive), or, for forgetting, two
    of ``steps`` each (suite.train = A, then suite.train_b = B)."""
    if cfg.protocol == "forgetting":
        return [Phase("A", cfg.suite.train, int(cfg.steps)), Phase("B", cfg.suite.train_b, 2 * int(cfg.steps))]
    return [Phase("train", cfg.suite.train, int(cfg.steps))]


log = logging.getLogger("dreamalloc")


def attach_run_log(run_dir: Path) -> logging.Handler | None:
    """Send the ``dreamalloc`` logger's lines to ``run_dir/train.log`` (unless a handler writes there already, as
    Hydra's job log does under train.py) and to the console when nothing else shows them; INFO level. Returns the
    file handler added (to remove at the end of the run), or None."""
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    target = (Path(run_dir) / "train.log").resolve()
    handlers = [*log.handlers, *logging.getLogger().handlers]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in handlers):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("[%(asctime)s][%(name)s] %(message)s"))
        log.addHandler(console)
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == target for h in handlers):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(target)
    fh.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    log.addHandler(fh)
    return fh


class Run:
    """One training run and everything a checkpoint carries: the config, the run and checkpoint folders, the env
    core and the agent stepped by a ``Driver``, the logger, the counters (env steps, episodes, the rolling return
    window, the next log step) and the checkpoints this run wrote. ``Run(cfg, overrides)`` starts a fresh run or,
    with ``resume``, continues one from its checkpoint."""

    def __init__(self, cfg: DictConfig, overrides: list[str]):
        if OmegaConf.select(cfg, "checkpoint", default=None):
            raise ValueError("config error: checkpoint= is read by evaluate.py only; to continue a run pass "
                             "resume=PATH (a run directory, a checkpoint folder or file) or resume=true")
        found = find_resume(cfg, overrides)
        resume_from, payload = found if found is not None else (None, None)
        if payload is not None:
            cfg = resumed_config(cfg, payload, resume_from, overrides)
        validate(cfg)
        self.cfg, self.overrides = cfg, overrides
        self.device = select_device(cfg.device)
        seed_everything(int(cfg.seed))
        self.run_dir = Path(payload["run_dir"]) if payload else Path(cfg.run_dir)
        self.B = int(cfg.env.num_envs)
        self.phases = protocol_phases(cfg)
        self.total = self.phases[-1].until
        self.step, self.episodes = (int(payload["step"]), int(payload["episodes"])) if payload else (0, 0)
        self.phase = next(i for i, p in enumerate(self.phases) if p.until > self.step or i == len(self.phases) - 1)
        self.core = make_core(cfg.env, self.phases[self.phase].tasks, self.B, self.device)
        self.agent = build_agent(cfg, self.core, self.device)
        self.ckpt_dir = resume_from.parent if payload else fresh_checkpoint_dir(cfg, run_name(cfg, overrides))
        for pattern in (".ckpt_*.tmp-*", ".best_*.tmp-*") if payload else ():  # a write killed half-way
            for stale in self.ckpt_dir.glob(pattern):
                stale.unlink(missing_ok=True)
        try:
            check_writable(self.run_dir, "the run directory")
            check_writable(self.ckpt_dir, "the checkpoint folder")
        except OSError:
            if payload is None:
                release_checkpoint_dir(self.ckpt_dir)  # nothing ran: the folder is not this run's after all
            raise
        self.run_dir = claim_run_dir(self.run_dir, resumed=payload is not None)
        if str(self.run_dir) != str(cfg.run_dir):
            cfg.run_dir = str(self.run_dir)
        try:
            self._start(cfg, overrides, payload, resume_from)
        except BaseException:
            release_run_dir(self.run_dir)  # nothing runs: another run may use the folder
            raise

    def _start(self, cfg: DictConfig, overrides: list[str], payload: dict | None, resume_from: Path | None) -> None:
        """The rest of the start, in the claimed run directory: checkpoint folder, state, driver, logger."""
        (self.run_dir / "checkpoint_dir.txt").write_text(str(self.ckpt_dir.resolve()) + "\n")
        if payload is None:
            (self.ckpt_dir / "run.json").write_text(json.dumps(
                {"run_dir": str(self.run_dir.resolve()), "name": self.ckpt_dir.name, "command": list(sys.argv)},
                indent=1) + "\n")
        loop = {}
        if payload is not None:
            check_meta(resume_from, payload.get("meta"), self.agent.meta())  # another agent / env: a clear error
            self.agent.load_state_dict(payload["agent"])
            self.core.load_state_dict(payload["env"])
            set_rng_state(payload["rng"])
            loop = payload.get("loop") or {}
        self.driver = Driver(self.core, self.agent)  # act / step / observe; the run adds updates, logs, saves
        if payload is not None:
            self.driver.resume()
        else:
            self.driver.reset(seed=int(cfg.seed) * TRAIN_SEED_STRIDE)
        self.next_eval, self.next_ckpt = self._next_after("eval.every"), self._next_after("checkpoint_every")
        self.next_select = self._next_after("eval.select_every")
        # model selection: every validation score so far and the step of the best (whose weights are best_STEP)
        saved = loop.get("selection") or {"history": [], "best_step": None, "best_return": None}
        self.selection = {**saved, "history": list(saved["history"])}
        # the best file the newest checkpoint records: kept until a newer checkpoint records another, so a resume
        # from that checkpoint always finds it; any other is from a run killed after its last checkpoint
        self.saved_best = self._best_name()
        for lost in list_best(self.ckpt_dir) if payload else ():
            if lost.name != self.saved_best:
                lost.unlink(missing_ok=True)
        self.next_log = int(loop.get("next_log", self.step + self._every("logger.every")))
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.logger = Logger(self.run_dir, self.resolved, mode=cfg.logger.mode, project=cfg.logger.project,
                             entity=cfg.logger.entity, name=run_name(cfg, overrides), group=cfg.logger.group,
                             tags=list(cfg.logger.tags), resume_id=payload.get("wandb_id") if payload else None,
                             resume_lines=int(loop["metric_lines"]) if "metric_lines" in loop else None,
                             resume_step=self.step if payload else None)
        self.log_file = attach_run_log(self.run_dir)
        if int(cfg.steps) % self.B:
            log.warning("steps=%d is not a multiple of env.num_envs=%d: every env step moves all %d envs, so "
                        "training runs %d env steps per phase", int(cfg.steps), self.B, self.B,
                        -(-int(cfg.steps) // self.B) * self.B)
        self.t0, self.s0 = time.perf_counter(), self.step
        self.recent: deque[float] = deque(loop.get("recent", []), maxlen=100)
        # the family's per-episode metrics (e.g. mean_job_time) of the same recent episodes, logged beside the return
        saved = loop.get("recent_metrics", {})
        self.recent_metrics = {k: deque(saved.get(k, []), maxlen=100) for k in family_of(cfg.env).metrics}
        self.written: list[str] = list(loop.get("written", []))  # checkpoints this run wrote (the only ones it prunes)
        self.updates_seen = getattr(self.agent, "n_updates", 0)
        self.phase_evals: dict[str, dict] = {}

    def _every(self, key: str) -> int:
        return int(OmegaConf.select(self.cfg, key))

    def _next_after(self, key: str) -> int | None:  # the first multiple of the interval past the current step
        return (self.step // self._every(key) + 1) * self._every(key) if self._every(key) else None

    # --- one env step of every row, and what follows it --------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One Driver step, the episode counters, the agent's update (guarded against non-finite values)."""
        _, _, _, info = self.driver.step()
        self.step += self.B
        if "episode" in info:
            done = info["_episode"]
            self.episodes += int(done.sum())
            self.recent.extend(info["episode"]["r"][done].tolist())
            final = info.get(FINAL_INFO, {})
            for k, window in self.recent_metrics.items():
                if k in final:
                    window.extend(torch.as_tensor(final[k])[done].tolist())
        return self.learn()

    def learn(self) -> dict[str, float]:
        cfg, agent, step = self.cfg, self.agent, self.step
        try:
            upd = agent.update(step)
        except NonFiniteLossError as e:  # raised before any parameter changed: the agent is still good
            if cfg.on_nonfinite == "skip":
                print(f"dreamalloc: warning: update skipped at step {step}: {e}", file=sys.stderr)
                return {}
            path = self.save(step)
            raise NonFiniteLossError(f"{e}; training stopped at step {step}, the last good state is saved "
                                     f"in {path}") from e
        if getattr(agent, "n_updates", 0) != self.updates_seen:
            self.updates_seen = getattr(agent, "n_updates", 0)
            bad = nonfinite_parameter(agent)
            if bad is not None:
                good = list_checkpoints(self.ckpt_dir)
                raise NonFiniteLossError(
                    f"agent={cfg.agent.name}: parameter {bad} became NaN or infinite in the update at step {step}; "
                    f"training stopped and nothing was saved from this state; the last good checkpoint is "
                    f"{good[-1] if good else 'none (no checkpoint was written yet)'}")
        return upd

    def log(self, upd: dict[str, float]) -> dict | None:
        """A training-metric line when one is due (and at the end); returns it."""
        if self.step < self.next_log and self.step < self.total:
            return None
        self.next_log = self.step + self._every("logger.every")
        line = {"train/episodes": self.episodes, **{f"train/{k}": float(v) for k, v in upd.items()}}
        if self.recent:
            line["train/return"] = float(np.mean(self.recent))
        line.update({f"train/{k}": float(np.mean(w)) for k, w in self.recent_metrics.items() if w})
        self.logger.log(line, step=self.step)
        wall = time.perf_counter() - self.t0
        sps = (self.step - self.s0) / max(wall, 1e-9)
        self.logger.log_timing({"time/steps_per_second": sps, "time/wall_seconds": wall}, step=self.step)
        losses = " ".join(f"{k}={v:.4g}" for k, v in upd.items())
        log.info("step %d/%d | episodes %d | return %s | %.0f steps/s | %.0f s%s", self.step,
                 -(-self.total // self.B) * self.B,
                 self.episodes, f"{line['train/return']:.2f}" if "train/return" in line else "n/a", sps, wall,
                 f" | {losses}" if losses else "")
        return line

    def periodic(self) -> None:
        """The selections, evaluations and checkpoints due at this step (those of the last step come with
        ``finish``)."""
        if self.next_select is not None and self.total > self.step >= self.next_select:
            self.next_select += self._every("eval.select_every")
            self.select(self.step)
        if self.next_eval is not None and self.total > self.step >= self.next_eval:
            self.next_eval += self._every("eval.every")
            self.evaluate(self.step)
        if self.next_ckpt is not None and self.total > self.step >= self.next_ckpt:
            self.next_ckpt += self._every("checkpoint_every")
            self.save(self.step)

    # --- phases -------------------------------------------------------------------------------------------------
    def phase_over(self) -> bool:
        return self.step >= self.phases[self.phase].until

    def next_phase(self) -> None:
        """Evaluate the finished phase (protocol=forgetting: after A), then train on the next phase's tasks."""
        done = self.phases[self.phase]
        self.phase_evals[done.name] = self.evaluate(self.step)
        (self.run_dir / f"eval_after_{done.name}.txt").write_text(f"step_{self.step:012d}\n")
        self.phase += 1
        self.core = make_core(self.cfg.env, self.phases[self.phase].tasks, self.B, self.device)
        self.driver = Driver(self.core, self.agent)
        self.driver.reset(seed=int(self.cfg.seed) * TRAIN_SEED_STRIDE + self.phase * 7_919)

    # --- saving, evaluating -------------------------------------------------------------------------------------
    def _keep_replay(self) -> bool:
        """``save_replay``: null keeps what the agent keeps by default (its ``replay_by_default``)."""
        keep = self.cfg.save_replay
        return type(self.agent).replay_by_default if keep is None else bool(keep)

    def _payload(self, at: int, names: list[str]) -> dict:
        return {
            "config": self.resolved, "run_dir": str(self.run_dir), "step": at, "episodes": self.episodes,
            "agent": self.agent.state_dict(include_replay=self._keep_replay()), "env": self.core.state_dict(),
            "rng": rng_state(), "meta": self.agent.meta(), "wandb_id": self.logger.wandb_run_id,
            "loop": {"recent": list(self.recent), "next_log": self.next_log,
                     "recent_metrics": {k: list(w) for k, w in self.recent_metrics.items()},
                     "metric_lines": self.logger.lines, "written": names, "selection": self.selection}}

    @staticmethod
    def _write(path: Path, payload: dict) -> None:
        try:
            save_checkpoint(path, payload)
        except OSError as e:
            raise CheckpointWriteError(e.errno, e.strerror or str(e)) from e

    def save(self, at: int) -> Path:
        path = checkpoint_path(self.ckpt_dir, at)
        names = self.written + ([path.name] if path.name not in self.written else [])
        self._write(path, self._payload(at, names))
        self.written[:] = names
        if self.saved_best != self._best_name():  # the checkpoint now records the current best file
            if self.saved_best is not None:
                (self.ckpt_dir / self.saved_best).unlink(missing_ok=True)
            self.saved_best = self._best_name()
        gone = prune_checkpoints(self.ckpt_dir, int(self.cfg.keep_checkpoints),
                                 [self.ckpt_dir / n for n in self.written], protect=path)
        self.written[:] = [n for n in self.written if self.ckpt_dir / n not in gone]
        return path

    def _best_name(self) -> str | None:
        step = self.selection["best_step"]
        return None if step is None else best_path(self.ckpt_dir, step).name

    def select(self, at: int) -> float:
        """Model selection (``eval.select_every``): score the agent on the training tasks' validation streams; a new
        best is written as ``best_STEP`` and recorded in ``selection.json`` (the previous best file is removed,
        unless the newest checkpoint still records it: then ``save`` removes it once a newer one does not)."""
        with rng_preserved():  # scoring must not move training: the run without selection trains the same weights
            score = validation_return(self.agent, self.cfg.env, self.cfg.suite, self.cfg.eval, self.device)
        sel = self.selection
        sel["history"].append([int(at), score])
        if sel["best_return"] is None or score >= sel["best_return"]:  # a tie goes to the more trained weights
            old = self._best_name()
            sel["best_step"], sel["best_return"] = int(at), score
            self._write(best_path(self.ckpt_dir, at), self._payload(at, list(self.written)))
            if old is not None and old not in (self._best_name(), self.saved_best):
                (self.ckpt_dir / old).unlink(missing_ok=True)
        write_json(self.run_dir / "selection.json", {"every": self._every("eval.select_every"),
                                                     "trials": int(self.cfg.eval.select_trials),
                                                     "best_file": str(self.ckpt_dir / self._best_name()), **sel})
        self.logger.log({"select/return": score, "select/best_return": sel["best_return"]}, step=at)
        log.info("selection at step %d: validation return %.3f (best %.3f at step %d)", at, score,
                 sel["best_return"], sel["best_step"])
        return score

    def evaluate(self, at: int, selected: dict | None = None) -> dict:
        """The held-out evaluation of the agent as it is, written to ``eval/step_AT``. ``selected`` (what model
        selection chose): the agent holds the kept weights; the results go to ``eval/step_AT_selected`` under the
        label ``LABEL (selected)``, carry the record and are logged as ``eval_selected/...``."""
        cfg = self.cfg
        set_progress(show_progress(cfg))
        res = evaluate_suite(self.agent, cfg.env, cfg.suite, cfg.eval, self.device, method_name(cfg), int(cfg.seed),
                             at)  # the signature the fault tests wrap (tests/test_faults.py)
        res["label"] = run_label(cfg, self.overrides) + (" (selected)" if selected is not None else "")
        if selected is not None:
            res["selected"] = selected
        from dreamalloc.experiment.reporting import write_evaluation
        out = self.run_dir / "eval" / (f"step_{at:012d}" + ("_selected" if selected is not None else ""))
        write_evaluation(res, out, self.logger if selected is None else None, at)
        self.logger.log(_selected_keys(summary(res)) if selected is not None else summary(res), step=at)
        return res

    def finish(self) -> tuple[Path, dict, dict]:
        """The final checkpoint and evaluation (and the forgetting report); returns (checkpoint, results, extra).
        With model selection the final weights are scored too and evaluated as without selection (``eval/step_N``,
        the run's label), then the kept weights beside them (``eval/step_N_selected``, ``LABEL (selected)``);
        the results returned are the kept weights'."""
        selecting = bool(self._every("eval.select_every"))
        if selecting and (not self.selection["history"] or self.selection["history"][-1][0] != self.step):
            self.select(self.step)
        path = self.save(self.step)
        self.final = path
        last_eval = self.evaluate(self.step)
        chosen: dict = {}
        if selecting:
            best = load_checkpoint(self.ckpt_dir / self._best_name(), expected=self.agent.meta(),
                                   map_location=self.device)
            self.agent.load_state_dict(best["agent"])
            chosen = self.evaluate(self.step, selected={"step": self.selection["best_step"],
                                                        "validation_return": self.selection["best_return"],
                                                        "every": self._every("eval.select_every"),
                                                        "trials": int(self.cfg.eval.select_trials)})
        extra: dict = {}
        if self.cfg.protocol == "forgetting" and "A" in self.phase_evals:
            extra = forgetting_report(self.phase_evals["A"], last_eval)
            (self.run_dir / "forgetting.json").write_text(json.dumps(extra, indent=1) + "\n")
            self.logger.log(extra, step=self.step)
        self.logger.log_summary({"steps": self.step, "episodes": self.episodes, "checkpoint": str(path),
                                 **summary(last_eval), **(_selected_keys(summary(chosen)) if chosen else {}), **extra})
        return path, chosen or last_eval, extra

    final: Path | None = None  # the final checkpoint, once written


def _selected_keys(flat: dict[str, float]) -> dict[str, float]:
    """``eval/...`` -> ``eval_selected/...``: the kept weights' scalars beside the final weights'."""
    return {"eval_selected/" + k.removeprefix("eval/"): v for k, v in flat.items()}


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or continue) the run ``cfg`` describes; ``overrides`` are its command-line overrides (read from
    Hydra when None), which name its checkpoint folder and are checked against a checkpoint on resume."""
    overrides = task_overrides() if overrides is None else list(overrides)
    if str(cfg.eval.get("mode", "suite")) != "suite":
        raise ValueError(f"config error: eval.mode={cfg.eval.mode} is an evaluate.py mode; train.py evaluates the "
                         "held-out suite. Train, then: python evaluate.py checkpoint=RUN_DIR "
                         f"eval.mode={cfg.eval.mode}")
    run = Run(cfg, overrides)
    cfg = run.cfg
    show = show_progress(cfg)
    bar = tqdm(total=run.total, initial=min(run.step, run.total), disable=not show, unit="step",
               dynamic_ncols=True, desc=run_name(cfg, overrides))
    path, last_eval, extra = None, None, {}
    interrupted: list = []
    previous_handler = _catch_sigint(interrupted)
    try:
        while run.step < run.total:
            if interrupted:
                path = run.save(run.step)
                raise TrainingError(f"interrupted at step {run.step}; the run is saved in {path}; continue it with "
                                    f"resume={run.run_dir}")
            if run.phase_over():  # protocol=forgetting: phase A is over; evaluate, move on to B
                run.next_phase()
            upd = run.train_step()
            bar.update(run.B)
            line = run.log(upd)
            if line is not None:
                sps = (run.step - run.s0) / max(time.perf_counter() - run.t0, 1e-9)
                bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{line.get('train/return', float('nan')):.2f}")
            run.periodic()
        bar.close()
        path, last_eval, extra = run.finish()
    except OSError as e:  # a full disk or a read-only folder while logging / evaluating / saving
        raise TrainingError(_save_after_io_error(e, run.save, run.step, run.final)) from e
    except (NonFiniteLossError, TrainingError):
        raise  # these already said what was saved (a NaN parameter deliberately saves nothing)
    except Exception as e:  # anything else (a bug, out of memory): save what can be saved, then one message
        what = f"{type(e).__name__}: {e}"
        raise TrainingError(_save_after_io_error(what, run.save, run.step, run.final)) from e
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        bar.close()
        run.logger.close()
        release_run_dir(run.run_dir)
        if run.log_file is not None:
            log.removeHandler(run.log_file)
            run.log_file.close()
    return {"run_dir": str(run.run_dir), "checkpoint": str(path), "step": run.step, "episodes": run.episodes,
            "results": last_eval, "forgetting": extra}


def _save_after_io_error(e, save, step: int, final: Path | None) -> str:
    """One message for a failure during training (an I/O error, or any other exception): what failed, and where
    the trained state is (saved now if it can be)."""
    if final is not None:
        return f"{e}; training had finished and its final checkpoint is {final}"
    if isinstance(e, CheckpointWriteError):
        return f"{e}; training stopped at step {step}"
    try:
        path = save(step)
    except OSError as e2:
        return f"{e}; saving a checkpoint at step {step} failed as well ({e2})"
    return f"{e}; training stopped at step {step} and its state is saved in {path} (resume=true continues it)"


def _catch_sigint(flag: list):
    """Ctrl-C stops at the next step boundary with a checkpoint; a second Ctrl-C stops at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(True)
        print("\ndreamalloc: interrupt: saving a checkpoint at the end of this step (Ctrl-C again to stop now)",
              file=sys.stderr)

    return signal.signal(signal.SIGINT, handler)
