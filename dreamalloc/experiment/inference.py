"""Load a trained agent and act with it outside the harness, like SB3's ``PPO.load(path).predict(obs)``.

    import dreamalloc
    policy = dreamalloc.load_agent("outputs/2026-12-04/12-00-00_ppo_lim2024_s0")  # run dir, folder or file
    action, state = policy.predict(obs)                    # numpy or torch, one observation or a batch
    action, state = policy.predict(obs, state, episode_start=done, info=info)   # recurrent agents, masks

Every agent of the package loads this way (heuristic, dispatch, dqn, ppo, a2c, rl2_ppo, dreamer): the
checkpoint's own config rebuilds the agent exactly as training built it (``training.build_agent`` on the
env of ``config.make_core``), its ``meta`` is checked against the rebuilt agent, and ``predict`` calls the
agent's ``act`` with the same inputs the evaluation gives it, so its actions are the evaluation's actions.

What ``predict`` needs beyond the observation:

* ``state``: the recurrent state returned by the previous call (None: a fresh one; feed-forward agents
  return None). ``episode_start`` ([B] bools) resets it where True: pass the env's trial starts for the
  meta-RL agents (rl2_ppo, dreamer keep their memory across the episodes of a trial), or, as with SB3's
  recurrent policies, the episode starts.
* ``info``: the env's info dict of the same step (numpy or torch values). It carries ``action_mask``
  (the address and hole action spaces: without it a learnt agent may pick an invalid action) and, for
  ``agent=dispatch``, the servers' queues: the ``jsq`` and ``p2c`` rules read ``info["queue"]``, which the
  observation does not hold; the other dispatch rules fall back on the observed loads and job size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dreamalloc.agents.base import Agent
from dreamalloc.experiment.checkpoint import CheckpointError, check_meta, latest_checkpoint, load_checkpoint


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the file itself, the newest ``ckpt_*.pt`` of a checkpoint folder,
    or a run directory's (its ``checkpoints/`` folder, or the folder its ``checkpoint_dir.txt`` records)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"load_agent: {p} does not exist; pass a checkpoint file (ckpt_*.pt), a folder "
                                "of them, or a run directory")
    tried = [p, p / "checkpoints"]
    link = p / "checkpoint_dir.txt"
    if link.is_file():
        tried.append(Path(link.read_text().strip()))
    for d in tried:
        found = latest_checkpoint(d)
        if found is not None:
            return found
    folders = sorted({f.parent for f in p.rglob("ckpt_*") if latest_checkpoint(f.parent) is not None})
    if len(folders) == 1:
        return latest_checkpoint(folders[0]) or folders[0]
    if folders:
        raise FileNotFoundError(f"load_agent: {p} holds checkpoints of {len(folders)} runs ("
                                + ", ".join(map(str, folders[:4])) + (", ..." if len(folders) > 4 else "")
                                + "); pass one of those folders")
    raise FileNotFoundError(f"load_agent: no checkpoint (ckpt_*.pt) in {p}, its checkpoints/ folder or the folder "
                            "its checkpoint_dir.txt names; pass a checkpoint file, a folder of them, or a run "
                            "directory")


INFO_KEYS = ("action_mask", "trial_start", "episode_start", "work", "loads", "queue", "job_size")  # what act() reads
_FLAGS = ("action_mask", "trial_start", "episode_start")


class LoadedAgent:
    """A trained agent with SB3's ``predict`` face; ``agent`` is the underlying ``dreamalloc`` Agent.

    Attributes: ``agent``, ``config`` (the run's resolved config), ``meta`` (what the checkpoint records:
    agent name, observation size, number of actions, ...), ``step`` (env steps trained), ``path`` (the file
    read), ``device``, ``obs_dim``, ``n_actions``.
    """

    def __init__(self, agent: Agent, config: DictConfig, meta: dict, step: int, path: Path, device: torch.device):
        self.agent, self.config, self.meta, self.step, self.path, self.device = agent, config, meta, step, path, device
        self.obs_dim, self.n_actions = agent.obs_dim, agent.n_actions
        from dreamalloc.experiment.config import env_config, family_of

        self.family = family_of(config.env)
        self.env_config = env_config(config.env, config.suite.train)

    def __repr__(self) -> str:
        return (f"LoadedAgent({self.meta.get('agent')!r}, obs_dim={self.obs_dim}, n_actions={self.n_actions}, "
                f"step={self.step}, path={str(self.path)!r})")

    def initial_state(self, batch: int = 1) -> Any:
        """The recurrent state of ``batch`` fresh trials (None for feed-forward agents)."""
        return self.agent.initial_state(int(batch))

    def predict(self, obs, state: Any = None, episode_start=None, deterministic: bool = True,
                info: dict | None = None) -> tuple[Any, Any]:
        """``(action, state)`` for ``obs`` [obs_dim] or [B, obs_dim] (numpy or torch).

        The action has the input's kind and batch shape: a numpy int64 array [B] (0-d for one observation)
        or a torch int64 tensor on the agent's device. See the module docstring for ``state``,
        ``episode_start`` and ``info``.
        """
        as_torch = isinstance(obs, torch.Tensor)
        x = torch.as_tensor(np.asarray(obs) if not as_torch else obs, dtype=torch.float32).to(self.device)
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"predict: observations must have shape [{self.obs_dim}] or [B, {self.obs_dim}] "
                             f"(this {self.meta.get('agent')} agent's observation size), got {tuple(np.shape(obs))}")
        B = x.shape[0]
        inf = self._info(info, B, single)
        if episode_start is not None:
            start = self._rows(episode_start, B, "episode_start", torch.bool, single)
            inf["trial_start"] = inf.get("trial_start", torch.zeros_like(start)).to(torch.bool) | start
            inf["episode_start"] = inf.get("episode_start", torch.zeros_like(start)).to(torch.bool) | start
        inf.setdefault("episode_start", torch.zeros(B, dtype=torch.bool, device=self.device))
        if getattr(self.agent, "fixed", False) and self.family.info_from_obs is not None:
            self.family.info_from_obs(x, inf, self.env_config)  # what the family's rule reads, where info lacks it
        if state is None:
            state = self.agent.initial_state(B)
        with torch.no_grad():
            action, state = self.agent.act(x, state, inf, bool(deterministic))
        if single:
            action = action[0]
        return (action if as_torch else action.cpu().numpy()), state

    # --- inputs ---------------------------------------------------------------------------------------
    def _rows(self, v, B: int, name: str, dtype=None, single: bool = False) -> torch.Tensor:
        try:
            t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).to(self.device)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"predict: {name} must be an array (numpy or torch), got {type(v).__name__}: "
                             f"{e}") from None
        if dtype is not None:
            t = t.to(dtype)
        if single and (t.ndim == 0 or t.shape[0] != 1):
            t = t.reshape(1, *t.shape)
        if t.ndim == 0 or t.shape[0] != B:
            raise ValueError(f"predict: {name} must have one row per observation ({B}), got shape {tuple(t.shape)}")
        return t

    def _info(self, info: dict | None, B: int, single: bool) -> dict:
        if info is None:
            return {}
        if not isinstance(info, dict):
            raise ValueError(f"predict: info must be the env's info dict, got {type(info).__name__}")
        out = {}
        for key in INFO_KEYS:  # only what agents read; the autoreset bookkeeping of the last step is not input
            if key in info and info[key] is not None:
                out[key] = self._rows(info[key], B, f"info[{key!r}]", torch.bool if key in _FLAGS else None, single)
        return out


def load_agent(path: str | os.PathLike, device: str = "auto") -> LoadedAgent:
    """The agent a checkpoint holds, ready to ``predict``: ``path`` is a checkpoint file, a checkpoint folder
    (its newest file) or a run directory. ``device``: auto | cpu | cuda[:N]."""
    from dreamalloc.experiment.config import make_core
    from dreamalloc.experiment.seeding import select_device
    from dreamalloc.experiment.training import build_agent

    ckpt = find_checkpoint(path)
    payload = load_checkpoint(ckpt)
    missing = [k for k in ("config", "meta") if k not in payload] + ([] if "agent" in payload or POLICY in payload
                                                                      else ["agent"])
    if missing:
        raise CheckpointError(f"checkpoint {ckpt} lacks {', '.join(missing)}: it was not written by the training "
                              "harness (train.py) or by export_policy, so load_agent cannot rebuild its agent")
    dev = select_device(device)
    cfg = OmegaConf.create(payload["config"])
    core = make_core(cfg.env, cfg.suite.train, 1, dev)
    agent = build_agent(cfg, core, dev)
    check_meta(ckpt, payload["meta"], agent.meta())
    load_into(agent, payload, ckpt)
    agent.initial_state(1)  # drops the state of trials in progress that a resumed training run would continue
    return LoadedAgent(agent, cfg, dict(payload["meta"]), int(payload.get("step", 0)), ckpt, dev)


POLICY = "policy"  # the key of a policy export's networks (``export_policy``); a checkpoint has "agent"


def load_into(agent: Agent, payload: dict, path) -> None:
    """A checkpoint's full agent state, or a policy export's networks, into ``agent``."""
    if "agent" in payload:
        agent.load_state_dict(payload["agent"])
        return
    try:
        agent.load_policy_state(payload[POLICY])
    except (ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"policy {path} does not fit the agent its config builds: {e}") from e


def export_policy(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the policy of a checkpoint (``path``: a checkpoint file, folder or run directory, as ``load_agent``
    takes) to ``out`` (default: ``policy_{step}.safetensors`` beside the checkpoint): the networks the agent
    acts with, the run's config and the agent's meta; no optimiser state, replay, rollout, target networks or
    env state. ``load_agent`` and ``evaluate.py checkpoint=...`` load it like a checkpoint (a policy cannot
    resume training). Returns the path written."""
    from dreamalloc.experiment.checkpoint import save_checkpoint

    loaded = load_agent(path, device="cpu")
    out = Path(out) if out is not None else loaded.path.with_name(f"policy_{loaded.step}.safetensors")
    if _is_checkpoint_name(out):
        raise ValueError(f"export_policy: {out.name} is a training checkpoint's name (ckpt_*): a resume would take "
                         "the policy for one; choose another name")
    return save_checkpoint(out, {"config": OmegaConf.to_container(loaded.config, resolve=True),
                                 "meta": loaded.meta, "step": loaded.step, POLICY: loaded.agent.policy_state()})


def _is_checkpoint_name(p: Path) -> bool:
    return p.name.startswith("ckpt_")


__all__ = ["POLICY", "LoadedAgent", "export_policy", "find_checkpoint", "load_agent", "load_into"]
