"""A new env family is cheap: a toy family written here (its dynamics as a DomainCore, a config, fixed rules, a
bound, and one ``register_family`` call: only domain hooks) trains ``rl2_ppo`` and ``dreamer`` through the same
``train()`` that ``train.py`` calls, with the evaluation protocol, the report files and a checkpoint.

The toy: ``arms`` actions, one of them paying 1 per step (the task's ``best``); episodes of ``horizon`` steps; the
task is drawn per trial, so an agent that remembers across the episodes of a trial earns more from its second on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_harness import cfg_of

from dreamalloc.core.actions import ActionSpec
from dreamalloc.core.family import FAMILIES, EnvFamily, References, register_family
from dreamalloc.core.rng import CounterRNG
from dreamalloc.core.rollout import constant_policy, run_episodes
from dreamalloc.core.trials import Trials
from dreamalloc.experiment.config import SuiteConf, validate
from dreamalloc.experiment.training import train


# --- the whole family: a few dozen lines of domain hooks ---------------------------------------------------
@dataclass
class ArmsEnvConf:
    kind: str = "toy_arms"
    num_envs: int = 8
    arms: int = 3
    horizon: int = 4
    trial_episodes: int = 2
    meta_obs: bool = True


@dataclass
class ArmsConfig:
    arms: int
    horizon: int
    best: list[int] = field(default_factory=list)  # per task


def arms_config(env: dict, tasks: list[dict]) -> ArmsConfig:
    cfg = ArmsConfig(int(env["arms"]), int(env["horizon"]), [int(t["params"]["best"]) for t in tasks])
    bad = [b for b in cfg.best if not 0 <= b < cfg.arms]
    if bad:
        raise ValueError(f"best arm {bad[0]} is not one of the {cfg.arms} arms")
    return cfg


class ArmsDomain:
    masked = False

    def __init__(self, B: int, cfg: ArmsConfig, device):
        self.B, self.device, self.cfg = B, torch.device(device), cfg
        self.obs_dim, self.n_actions, self.n_tasks, self.max_episode_steps = 1, cfg.arms, len(cfg.best), cfg.horizon
        self.best_of = torch.tensor(cfg.best, device=self.device)
        self.task_id, self.t = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)
        self.rng, self.action_spec = CounterRNG(B, self.device), ActionSpec(cfg.arms, B, self.device)

    def start(self, rows, seed, episode, trial):
        self.rng.reseed(rows, seed, trial, 0x7A)  # the task is the trial's
        self.task_id[rows] = (self.rng.uniform(rows) * self.n_tasks).long().clamp(max=self.n_tasks - 1)
        self.t[rows] = 0

    def step(self, a):
        reward = (a == self.best_of[self.task_id]).double()
        self.t += 1
        done = self.t >= self.cfg.horizon
        return reward, done, torch.zeros_like(done), {}

    def observe(self, rows=None):
        t = self.t if rows is None else self.t[rows]
        return (t.float() / self.cfg.horizon)[:, None]

    def info(self):
        return {"task_id": self.task_id.clone()}

    def state_dict(self):
        return {"task_id": self.task_id.clone(), "t": self.t.clone(), "rng": self.rng.state_dict()}

    def load_state_dict(self, s):
        self.task_id.copy_(s["task_id"]), self.t.copy_(s["t"]), self.rng.load_state_dict(s["rng"])


def make_core(env, tasks, num_envs, device, autoreset=True, trial_episodes=None):
    return Trials(ArmsDomain(num_envs, arms_config(env, tasks), device), trial_episodes or env["trial_episodes"],
                  meta_obs=env["meta_obs"], autoreset=autoreset)


class Always:  # the family's fixed rules: "arm0", "arm1", ...
    def __init__(self, rule, cfg, seed=0, device="cpu"):
        self.a = int(rule.removeprefix("arm"))

    def initial_state(self, batch):
        return None

    def act(self, obs, state, info):
        return torch.full((obs.shape[0],), self.a, dtype=torch.long), state

    def state_dict(self):
        return {}

    def load_state_dict(self, s):
        return None


def references(core, trials, seed, k, device):
    def play(a):
        ref = Trials(ArmsDomain(trials, core.cfg, device), k)
        return run_episodes(ref, constant_policy(ref, a), seed, k)["return"]

    return References({f"arm{a}": play(a) for a in range(core.cfg.arms)}, np.full((trials, k), 1.0 * core.cfg.horizon))


@pytest.fixture(autouse=True)
def toy_family():
    """Registered for this module's tests only (other tests' messages list the registered families)."""
    register_family(EnvFamily(kind="toy_arms", schema=ArmsEnvConf, make_core=make_core, env_config=arms_config,
                              references=references, fixed_policy=Always, rules=("arm0", "arm1", "arm2"),
                              streams=lambda s: s == "arm"))
    yield
    FAMILIES.pop("toy_arms")


# --- the test ------------------------------------------------------------------------------------------------
def toy_cfg(agent: list[str], tmp_path: Path):
    cfg = cfg_of(agent + ["logger=disabled", "progress=off", "steps=1536", "eval.trials=4",
                          "eval.episodes_per_trial=3", "eval.every=0"], tmp_path)
    tasks = [{"name": f"best{b}", "stream": "arm", "params": {"best": b}} for b in range(3)]
    suite = {"name": "toy", "train": tasks[:2], "heldout": {"seen": tasks[:1], "unseen": tasks[2:]}}
    OmegaConf.set_struct(cfg, False)
    cfg.env = OmegaConf.structured(ArmsEnvConf)
    cfg.suite = OmegaConf.merge(OmegaConf.structured(SuiteConf), suite)
    OmegaConf.set_struct(cfg, True)
    return cfg


TINY = {"rl2_ppo": ["agent=rl2_ppo", "agent.n_steps=16", "agent.bptt=8", "agent.batch_size=64",
                    "agent.hidden=[16]", "agent.rnn_hidden=16"],
        "dreamer": ["agent=dreamer_1m", "agent.deter=64", "agent.hidden=16", "agent.units=32", "agent.blocks=2",
                    "agent.classes=4", "agent.stoch=4", "agent.batch_size=4", "agent.batch_length=8",
                    "agent.train_ratio=1", "agent.learning_starts=256", "agent.replay_size=2048"]}


@pytest.mark.parametrize("agent", list(TINY))
def test_a_toy_family_trains_and_evaluates_through_the_harness(agent, tmp_path):
    cfg = toy_cfg(TINY[agent], tmp_path)
    validate(cfg)
    out = train(cfg, overrides=[])
    res = out["results"]
    assert set(res["sets"]) == {"seen", "unseen"} and res["columns"] == []
    unseen = res["sets"]["unseen"]["tasks"]["best2"]
    assert np.asarray(unseen["returns"]).shape == (4, 3)  # trials x episodes of a trial
    assert unseen["hindsight_best"]["rule"] == "arm2" and unseen["heuristics"]["arm2"] == 4.0
    assert unseen["heuristics"]["arm0"] == 0.0 and np.all(np.asarray(unseen["capacity_bound"]) == 4.0)
    returns = np.asarray(unseen["returns"])
    assert np.all((returns >= 0) & (returns <= 4))
    run = Path(out["run_dir"])
    table = (run / "eval" / "step_000000001536" / "results.md").read_text()
    assert re.search(r"\|\s*unseen\s*\|\s*best2\s*\|", table) and re.search(r"\|\s*arm2\s*\|", table)
    assert json.loads((run / "eval" / "step_000000001536" / "results.json").read_text())["method"] == agent
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 1536 and max(x.get("train/episodes", 0) for x in lines) > 0
    assert Path(out["checkpoint"]).is_file()


def test_the_toy_familys_fixed_rule_plays_through_agent_dispatch_names_only_its_own(tmp_path):
    cfg = toy_cfg(["agent=heuristic"], tmp_path)
    with pytest.raises(ValueError, match="another env family"):
        validate(cfg)
