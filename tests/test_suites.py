"""Every shipped task suite: loads by its config name, builds its train and held-out envs, is
deterministic, keeps the heap invariants, and its held-out tasks are not training tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from invariants import check_heaps
from script_module import load_script

from dreamalloc.alloc import AllocCore
from dreamalloc.core.rollout import run_episodes
from dreamalloc.core.tasks import expand_tasks
from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.config import env_config, tasks_of, validate

ROOT = Path(__file__).resolve().parents[1]
# allocation suites; the load-balancing ones (lb_*, job laws) are tested in tests/test_load_balance.py, the
# mallocgame one (programs) in tests/test_mallocgame_family.py
SUITES = sorted(p.stem for p in (ROOT / "conf" / "suite").glob("*.yaml")
                if not p.stem.startswith("lb_") and p.stem != "mallocgame")
REQUIRED = {"lim2024", "shift_sizes", "shift_lifetimes", "adversarial_rotation", "traces"}


def suite_cfg(name, *extra):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"suite={name}", *extra])
    validate(cfg)
    return cfg


def requests(cfg_env, tasks, seed, steps=40, B=3):
    core = AllocCore(B, env_config(cfg_env, tasks))
    core.reset(seed=seed)
    out = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        out.append(core.request.clone())
        core.step(torch.randint(0, core.cfg.n_actions, (B,), generator=g))
    check_heaps(core.heaps)
    return torch.stack(out)


def test_the_required_suites_ship():
    assert REQUIRED <= set(SUITES)


@pytest.mark.parametrize("name", SUITES)
def test_suite_loads_runs_and_is_deterministic(name):
    cfg = suite_cfg(name)
    assert cfg.suite.name == name and cfg.suite.heldout
    sets = {"train": tasks_of(cfg.suite.train)} | {k: tasks_of(v) for k, v in cfg.suite.heldout.items()}
    for set_name, tasks in sets.items():
        for task in ([tasks] if set_name == "train" else [[t] for t in tasks]):
            a = requests(cfg.env, task, seed=5)
            assert torch.equal(a, requests(cfg.env, task, seed=5)), (set_name, task)
            assert not torch.equal(a, requests(cfg.env, task, seed=6)), (set_name, task)


@pytest.mark.parametrize("name", SUITES)
def test_heldout_tasks_are_not_training_tasks(name):
    cfg = suite_cfg(name)
    if name.startswith("lim2024"):  # the paper's protocol evaluates on the streams it trains on
        return
    train = {(t["stream"], repr(sorted(t["params"].items()))) for t in expand_tasks(tasks_of(cfg.suite.train))}
    for set_name, tasks in cfg.suite.heldout.items():
        if set_name == "seen":  # a suite's in-distribution reference set, named so (shift_rules)
            continue
        for t in expand_tasks(tasks_of(tasks)):
            assert (t["stream"], repr(sorted(t["params"].items()))) not in train, (set_name, t["name"])


def test_meta_rl_trials_through_the_config():
    cfg = suite_cfg("shift_sizes", "env.trial_episodes=3", "env.meta_obs=true")
    core = AllocCore(4, env_config(cfg.env, cfg.suite.train))
    assert core.cfg.trial_episodes == 3 and core.cfg.obs_dim == 256 + 1 + 3 + 2
    _, info = core.reset(seed=0)
    assert bool(info["trial_start"].all()) and "task_id" in info


def test_adversarial_rotation_experiment_gives_every_rule_as_an_action():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=adversarial_rotation"])
    validate(cfg)
    core = AllocCore(2, env_config(cfg.env, cfg.suite.train))
    assert core.cfg.heuristics == ("first", "next", "best", "worst", "second")
    assert core.cfg.meta_obs and core.cfg.trial_episodes == 3


def test_workload_report_writes_the_table(tmp_path, capsys):

    wr = load_script("workload_report")
    assert wr.is_alloc_suite("adversarial_all") and not wr.is_alloc_suite("lb_standard")
    out = tmp_path / "w.md"
    wr.main(["--env", "alloc64", "--suites", "lim2024_mixed", "--trials", "3", "--out", str(out)])
    text = out.read_text()
    assert "| lim2024_mixed | 1 |" in text and "| mixed | mixed |" in text and "capacity bound" in text
    row = next(line for line in text.splitlines() if line.startswith("| mixed | mixed |"))
    assert row.count("**") == 2 and row.count("[") == 6  # one rule in bold; five rules + bound with CIs


def test_adversarial_hidden_rewards_memory_not_a_fixed_rule():
    """experiment=adversarial_hidden: no fixed rule survives more than its third of the trials in any episode,
    while a policy that keeps a rule until it dies and then moves to the next survives every third episode:
    the gain within a trial is there for an agent that remembers, and only for it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=adversarial_hidden"])
    validate(cfg)
    env = env_config(cfg.env, cfg.suite.train)
    assert env.heuristics == ("best", "worst", "first") and not env.bitmap and env.trial_episodes == 3
    full = 0.1 * env.max_allocs
    B = 90

    def eliminator(obs, info):  # obs ends with (previous reward, episode-start flag)
        ret = state["ret"] + obs[:, -2]  # the previous reward belongs to the episode just played
        start = obs[:, -1] > 0
        lost = start & (ret < full - 0.05) & ~info["trial_start"]  # float32 sums: half a reward unit
        state["ret"] = torch.where(start, torch.zeros_like(ret), ret)
        state["rule"] = torch.where(info["trial_start"], torch.arange(B) % 3, (state["rule"] + lost.long()) % 3)
        return state["rule"]

    for tasks in (cfg.suite.train, cfg.suite.heldout.blind4):
        state = {"rule": torch.zeros(B, dtype=torch.long), "ret": torch.zeros(B)}
        res = run_episodes(AllocCore(B, env_config(cfg.env, tasks)), eliminator, seed=7, k=3)
        survived = torch.as_tensor(res["return"]) >= full - 1e-9
        assert survived[:, 2].all(), "the third rule tried must be the survivor"
        assert 0.2 < survived[:, 0].float().mean() < 0.5 < survived[:, 1].float().mean() < 0.85
        for rule in range(3):
            fixed = run_episodes(AllocCore(B, env_config(cfg.env, tasks)), lambda o, i, r=rule: torch.full((B,), r),
                                 seed=7, k=3)
            assert ((torch.as_tensor(fixed["return"]) >= full - 1e-9).float().mean(0) < 0.5).all()
