"""A policy export (``scripts/export_policy.py``, ``inference.export_policy``): the networks an agent acts with, in
a safetensors file far smaller than a checkpoint, that ``load_agent`` and ``evaluate.py`` load and that acts
exactly as the checkpoint does; DQN and Dreamer checkpoints leave their replay out unless asked."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from script_module import load_script
from test_harness import QUICK, cfg_of, run_cli
from test_inference import BASE, CASES, _evaluation_steps

import dreamalloc
from dreamalloc.experiment.checkpoint import CheckpointError, load_checkpoint
from dreamalloc.experiment.inference import export_policy, find_checkpoint
from dreamalloc.experiment.training import train


def _trained(name, tmp_path, extra=()):
    cfg = cfg_of(BASE + CASES[name] + list(extra), tmp_path)
    return cfg, train(cfg, [])


@pytest.mark.parametrize("name", ["dqn", "ppo", "rl2_ppo", "dreamer", "heuristic"])
def test_exported_policy_acts_as_the_checkpoint_and_is_small(name, tmp_path):
    cfg, out = _trained(name, tmp_path)
    ckpt = find_checkpoint(out["run_dir"])
    path = export_policy(out["run_dir"], tmp_path / "policy.safetensors")
    payload = load_checkpoint(path)
    assert "agent" not in payload and "env" not in payload and payload["step"] == out["step"]
    assert os.path.getsize(path) < os.path.getsize(ckpt)
    full, lean = dreamalloc.load_agent(out["run_dir"]), dreamalloc.load_agent(path)
    assert lean.meta == full.meta and lean.step == full.step
    for k, m in full.agent.policy_modules().items():  # the same weights, bit for bit
        for (pk, a), (_, b) in zip(m.state_dict().items(), lean.agent.policy_modules()[k].state_dict().items(),
                                   strict=True):
            assert torch.equal(a, b), f"{k}.{pk}"
    set_name, tasks = next(iter(out["results"]["sets"].items()))
    task_name = next(iter(tasks["tasks"]))
    task = next(dict(t) for t in cfg.suite.heldout[set_name] if t.name == task_name)
    task = {k: v for k, v in task.items() if v not in ({}, 0) or k in ("name", "stream")}
    res_full, steps_full = _evaluation_steps(full.agent, cfg, task)
    res_lean, steps_lean = _evaluation_steps(lean.agent, cfg, task)
    assert len(steps_full) == len(steps_lean) > 2
    assert all(torch.equal(a[2], b[2]) for a, b in zip(steps_full, steps_lean, strict=True))  # every action
    np.testing.assert_array_equal(res_full["return"], res_lean["return"])


def test_dqn_policy_is_kilobytes_and_its_checkpoint_has_no_replay_unless_asked(tmp_path):
    _, out = _trained("dqn", tmp_path / "a")
    ckpt = find_checkpoint(out["run_dir"])
    assert load_checkpoint(ckpt)["agent"]["replay"] is None  # save_replay=null: DQN leaves its replay out
    path = export_policy(out["run_dir"], tmp_path / "dqn.safetensors")
    n_params = sum(p.numel() for p in dreamalloc.load_agent(path).agent.q.parameters())
    assert os.path.getsize(path) < 4 * n_params + 64_000  # the weights in float32 plus a small JSON header
    _, kept = _trained("dqn", tmp_path / "b", ["save_replay=true"])
    rep = load_checkpoint(find_checkpoint(kept["run_dir"]))["agent"]["replay"]
    assert rep is not None and rep["size"] > 0
    assert os.path.getsize(find_checkpoint(kept["run_dir"])) > os.path.getsize(ckpt)


def test_ppo_checkpoints_keep_their_rollout_by_default(tmp_path):
    """The on-policy rollout in progress is small and exact resumes need it: save_replay=null keeps it."""
    _, out = _trained("ppo", tmp_path, ["checkpoint_every=40"])
    ckpts = sorted((tmp_path / "ckpt").rglob("ckpt_*.safetensors"))
    assert any(load_checkpoint(c)["agent"]["rollout"] is not None for c in ckpts)


def test_evaluate_cli_loads_a_policy_export(tmp_path):
    train(cfg_of(QUICK + ["steps=64", "agent=dqn", "agent.learning_starts=16"], tmp_path))
    path = export_policy(tmp_path / "run", tmp_path / "dqn_policy.safetensors")
    r = run_cli("evaluate.py", QUICK + [f"checkpoint={path}", "suite=lim2024_mixed", "eval.trials=2",
                                        f"hydra.run.dir={tmp_path}/ev"], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "eval" / "results.json").read_text())
    assert res["method"].startswith("dqn") and res["step"] == 64


def test_a_policy_cannot_be_named_as_a_checkpoint_nor_loaded_into_another_agent(tmp_path):
    _, out = _trained("ppo", tmp_path)
    with pytest.raises(ValueError, match="training checkpoint's name"):
        export_policy(out["run_dir"], tmp_path / "ckpt_000000000001.safetensors")
    path = export_policy(out["run_dir"], tmp_path / "p.safetensors")
    agent = dreamalloc.load_agent(path).agent
    state = agent.policy_state()
    state["extra"] = {}
    with pytest.raises(ValueError, match="the policy holds networks"):
        agent.load_policy_state(state)


def test_export_policy_script(tmp_path, capsys):

    _, out = _trained("heuristic", tmp_path)
    mod = load_script("export_policy")
    assert mod.main([out["run_dir"], "--out", str(tmp_path / "h.safetensors")]) == 0
    assert "bytes" in capsys.readouterr().out and (tmp_path / "h.safetensors").is_file()
    with pytest.raises((CheckpointError, FileNotFoundError)):
        mod.main([str(tmp_path / "nothing_here")])


def test_bench_latency_exports_take_the_eager_actions(capsys, tmp_path):
    """A smoke run of scripts/bench_latency.py (the table, not the speed): the TorchScript and ONNX exports of DQN,
    PPO and Dreamer-RL^2 (greedy on its posterior's mode) take the eager agents' action on every timed observation,
    and --export writes loadable modules."""

    mod = load_script("bench_latency")
    assert mod.main(["--agents", "heuristic,dqn,ppo,dreamer_rl2", "--calls", "30", "--warmup", "5", "--export",
                     str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("actions differing from eager: 0/30") == 6  # TorchScript and ONNX Runtime, 3 agents
    lines = [x for x in out.splitlines() if x.startswith("latency_us_median_p99:")]
    assert [x.split()[1] for x in lines] == ["heuristic", "dqn", "ppo", "dreamer_rl2"]
    assert all(" export " in x and " onnx " in x for x in lines[1:])
    q = torch.jit.load(str(tmp_path / "dqn.torchscript.pt"))
    assert q(torch.zeros(1, 65))[0].shape == (1,)  # the acting step returns (action,)
    from dreamalloc.experiment.onnx_export import OnnxPolicy

    a, state = OnnxPolicy(tmp_path / "ppo.onnx").predict(np.zeros(65, np.float32))
    assert a.shape == () and state is None
    with pytest.raises(SystemExit):
        mod.main(["--agents", "sarsa"])
    # each agent in its own process: the same table, rows relayed from the children
    assert mod.main(["--agents", "heuristic,dqn", "--calls", "20", "--warmup", "2", "--fresh-process"]) == 0
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("latency_us_median_p99:")]
    assert [x.split()[1] for x in lines] == ["heuristic", "dqn"] and " onnx " in lines[1]
    assert "actions differing from eager: 0/20" in out
