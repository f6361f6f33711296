"""``dreamalloc.load_agent(path).predict(...)`` for every agent: the evaluation's actions on the evaluation's
observations, recurrent state and trial starts included; a malicious checkpoint file runs nothing."""

import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import dreamalloc
from dreamalloc.core.rollout import run_episodes
from dreamalloc.experiment.checkpoint import CheckpointError
from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.config import make_core
from dreamalloc.experiment.evaluation import agent_policy
from dreamalloc.experiment.training import train

ROOT = Path(__file__).resolve().parents[1]
BASE = ["logger=disabled", "progress=off", "device=cpu", "seed=3", "eval.trials=3", "eval.episodes_per_trial=2",
        "eval.timeline=false", "eval.baselines=off"]
ALLOC = ["env=alloc64", "env.num_envs=4", "suite=lim2024_mixed", "steps=256"]
LB = ["experiment=redovian2025_standard", "env.num_envs=4", "env.num_jobs=32", "steps=128"]
ONPOLICY = ["agent.n_steps=16", "agent.batch_size=32"]
DREAMER = ["agent=dreamer_1m", "agent.deter=32", "agent.hidden=16", "agent.units=16", "agent.blocks=2",
           "agent.classes=4", "agent.stoch=4", "agent.batch_size=4", "agent.batch_length=8", "agent.train_ratio=1",
           "agent.learning_starts=128", "agent.replay_size=1024", "agent.warmup=1"]
CASES = {
    "heuristic": ALLOC + ["agent=heuristic", "agent.rule=best"],
    "dispatch": LB + ["agent=dispatch", "agent.rule=jsq"],
    "dqn": ALLOC + ["agent=dqn", "agent.learning_starts=64"],
    "a2c": ALLOC + ["agent=a2c", "agent.n_steps=16"],
    "ppo": ALLOC + ["agent=ppo"] + ONPOLICY,
    "rl2_ppo": ALLOC + ["agent=rl2_ppo", "env.meta_obs=true", "env.trial_episodes=2", "agent.bptt=8"] + ONPOLICY,
    "dreamer": ALLOC + DREAMER,
}


def _evaluation_steps(policy_agent, cfg, task):
    """The evaluation of one task (as evaluate_task plays it) with every step's observation, info and action."""
    trials, k = int(cfg.eval.trials), int(cfg.eval.episodes_per_trial)
    core = make_core(cfg.env, [task], trials, torch.device("cpu"), trial_episodes=k)
    policy = agent_policy(policy_agent, core, task, trials, bool(cfg.eval.deterministic))
    steps = []

    def recording(obs, info):
        a = policy(obs, info)
        steps.append((obs.clone(), {key: v.clone() for key, v in info.items() if isinstance(v, torch.Tensor)},
                      a.clone()))
        return a

    torch.manual_seed(11)  # dreamer samples its latent state from the torch generator
    res = run_episodes(core, recording, int(cfg.eval.seed), k)
    return res, steps


@pytest.mark.parametrize("name", list(CASES))
def test_predict_gives_the_evaluations_actions(name, tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=BASE + CASES[name])
    cfg.run_dir, cfg.checkpoint_dir = str(tmp_path / "run"), str(tmp_path / "ckpt")
    out = train(cfg, [])
    policy = dreamalloc.load_agent(out["run_dir"])
    assert policy.meta["agent"] == cfg.agent.name and policy.step == out["step"]
    set_name, tasks = next(iter(out["results"]["sets"].items()))
    task_name = next(iter(tasks["tasks"]))
    task = next(dict(t) for t in cfg.suite.heldout[set_name] if t.name == task_name)
    task = {k: v for k, v in task.items() if v not in ({}, 0) or k in ("name", "stream")}
    # the loaded agent replays the evaluation written by training: the same returns (greedy dreamer acts on its
    # posterior's mode, so it replays it too)
    res, steps = _evaluation_steps(dreamalloc.load_agent(out["run_dir"]).agent, cfg, task)
    np.testing.assert_allclose(res["return"], np.asarray(tasks["tasks"][task_name]["returns"]))
    # predict, played on the same env (same streams, and the same draws of the torch generator in between, which
    # dreamer's latent sampling shares with the env), with its own state and the env's trial starts: it sees the
    # evaluation's observations and takes the evaluation's actions
    trials, k = int(cfg.eval.trials), int(cfg.eval.episodes_per_trial)
    core = make_core(cfg.env, [task], trials, torch.device("cpu"), trial_episodes=k)
    held = {"state": None, "t": 0, "starts": 0}

    def predicting(obs, info):
        want_obs, _, want_action = steps[held["t"]]
        torch.testing.assert_close(obs, want_obs)
        held["starts"] += int(info["trial_start"].sum())
        a, held["state"] = policy.predict(obs.numpy(), held["state"], episode_start=info["trial_start"].numpy(),
                                          info={key: v.numpy() for key, v in info.items()
                                                if isinstance(v, torch.Tensor)})
        assert isinstance(a, np.ndarray) and a.shape == (obs.shape[0],)
        np.testing.assert_array_equal(a, want_action.numpy(), err_msg=f"step {held['t']}")
        held["t"] += 1
        return torch.as_tensor(a)

    torch.manual_seed(11)
    again = run_episodes(core, predicting, int(cfg.eval.seed), k)
    assert held["t"] == len(steps) > 2 and held["starts"] >= trials  # every step compared
    np.testing.assert_array_equal(again["return"], res["return"])
    if name in ("rl2_ppo", "dreamer"):
        assert held["state"] is not None  # recurrent: the state was carried across the calls


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.marker),))


def test_malicious_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    _Boom.marker = str(marker)
    for name in ("ckpt_000000000001.safetensors", "ckpt_000000000002.pt"):
        f = tmp_path / "ckpt" / name
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(pickle.dumps({"config": _Boom(), "agent": _Boom(), "meta": _Boom()}))
        with pytest.raises((CheckpointError, FileNotFoundError, ValueError)):
            dreamalloc.load_agent(f)
        assert not marker.exists()
    with pytest.raises((CheckpointError, FileNotFoundError, ValueError)):
        dreamalloc.load_agent(tmp_path / "ckpt")
    assert not marker.exists()
    # the payload is live (read without running it): its opcodes call Path.touch on the marker through REDUCE
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pickle.dumps(_Boom()))]
    assert ("REDUCE", None) in ops and ("SHORT_BINUNICODE", "Path.touch") in ops
    assert ("SHORT_BINUNICODE", "pwned") in ops
