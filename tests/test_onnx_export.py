"""The ONNX export of a policy's decision (``experiment/onnx_export.py``, ``scripts/export_policy.py --onnx``): under
ONNX Runtime it takes the agent's own deterministic actions and carries its recurrent state, for the MLP, GRU and
Dreamer agents, masked action spaces and the meta-RL trial resets included; bad inputs get one clear error and
leave no file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_harness import cfg_of, run_cli
from test_inference import BASE, CASES

from dreamalloc.agents.dreamer.rssm import gumbel_like
from dreamalloc.experiment.config import make_core
from dreamalloc.experiment.inference import load_agent
from dreamalloc.experiment.onnx_export import OnnxPolicy, export_onnx, onnx_model
from dreamalloc.experiment.training import build_agent, train

SMALL_DREAMER = ["agent.deter=64", "agent.hidden=32", "agent.units=32", "agent.blocks=2", "agent.classes=4",
                 "agent.stoch=4"]
HOLE = ["env.action=hole", "env.holes=4"]
AGENTS = {
    "dqn_hole": ["env=alloc64", "agent=dqn"] + HOLE,
    "ppo": ["env=alloc64", "agent=ppo"],
    "a2c_hole": ["env=alloc64", "agent=a2c"] + HOLE,
    "rl2_ppo": ["env=alloc64", "agent=rl2_ppo", "env.meta_obs=true", "env.trial_episodes=2"],
    "ppo_pointer_hole": ["env=alloc64", "agent=ppo", "env.hole_features=4", "agent.pointer=8"] + HOLE,
    "rl2_ppo_pointer_hole": ["env=alloc64", "agent=rl2_ppo", "env.meta_obs=true", "env.trial_episodes=2",
                             "env.hole_features=4", "agent.pointer=8", "env.max_allocs=12"] + HOLE,
    "dreamer_rl2_gru": ["env=alloc64", "agent=dreamer_rl2", "env.meta_obs=true", "env.trial_episodes=2",
                        "agent.ac_gru=16"] + SMALL_DREAMER,
    "dreamer_hole": ["env=alloc64", "agent=dreamer_1m"] + HOLE + SMALL_DREAMER,
    "dreamer_sampled": ["env=alloc64", "agent=dreamer_1m", "agent.greedy_latent=sample"] + SMALL_DREAMER,
}


def _agent(overrides):
    cfg = cfg_of(overrides + ["device=cpu", "env.num_envs=1", "seed=5"])
    torch.manual_seed(5)
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    return build_agent(cfg, core, torch.device("cpu")), cfg


def _numpy_state(agent, state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):  # rl2_ppo
        return {"h": state.numpy()}
    out = {"deter": state["deter"].numpy(), "stoch": state["stoch"].numpy(), "prev_action": state["action"].numpy()}
    if "ac_h" in state:
        out["ac_h"] = state["ac_h"].numpy()
    return out


@pytest.mark.parametrize("name", list(AGENTS))
def test_onnx_decision_is_the_agents_own(name):
    """Along 80 env steps (trial and episode boundaries inside), ONNX Runtime fed the agent's state takes the
    agent's deterministic action and returns its next state; Dreamer acting on its posterior's mode has no noise
    input, with ``greedy_latent: sample`` its latent draw gets the same Gumbel noise as the agent's."""
    agent, cfg = _agent(AGENTS[name])
    policy = OnnxPolicy(onnx_model(agent, make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu")),
                                   check_steps=8))
    assert ("noise" in policy.input_names) == (name == "dreamer_sampled")
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    obs, info = core.reset(seed=1)
    state, starts = agent.initial_state(1), 0
    dreamer = name.startswith("dreamer")
    for t in range(80):
        start = bool(info["trial_start"][0]) or t == 0
        starts += start
        noise = None
        if dreamer:
            torch.manual_seed(100 + t)
            noise = gumbel_like(torch.empty(1, agent.wm.rssm.stoch, agent.wm.rssm.classes)).numpy()
            torch.manual_seed(100 + t)
        mask = info["action_mask"].numpy() if "action_mask" in info else None
        ort_state = _numpy_state(agent, state)
        with torch.no_grad():
            action, state = agent.act(obs, state, info, deterministic=True)
        a, new = policy.predict(obs[0].numpy(), ort_state, start, mask, noise)
        assert int(a) == int(action[0]), f"step {t}"
        if dreamer or name == "rl2_ppo":
            for k, v in _numpy_state(agent, state).items():
                np.testing.assert_allclose(new[k], v, atol=1e-4, rtol=1e-4, err_msg=f"{k} at step {t}")
        obs, _, _, _, info = core.step(action)
    assert starts >= 2  # a trial boundary inside the window: the reset path ran


def test_onnx_policy_carries_its_own_state_like_the_agent():
    """``predict`` chained on its own outputs (as an allocator would call it) acts as ``agent.act`` chained on
    its own state: RL^2-PPO over 3 trials."""
    agent, cfg = _agent(AGENTS["rl2_ppo"])
    policy = OnnxPolicy(onnx_model(agent, make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu")),
                                   check_steps=4))
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    obs, info = core.reset(seed=2)
    state, ort_state, trials = None, None, 0
    while trials < 3:
        start = bool(info["trial_start"][0])
        trials += start
        with torch.no_grad():
            action, state = agent.act(obs, state, info, deterministic=True)
        a, ort_state = policy.predict(obs[0].numpy(), ort_state, start)
        assert int(a) == int(action[0])
        obs, _, _, _, info = core.step(action)
    np.testing.assert_allclose(ort_state["h"], state.numpy(), atol=1e-4)


def test_export_script_writes_a_checked_onnx_file_that_acts_as_load_agent(tmp_path):
    cfg = cfg_of(BASE + CASES["dqn"], tmp_path)
    out = train(cfg, [])
    res = run_cli("scripts/export_policy.py", [out["run_dir"], "--onnx", str(tmp_path / "dqn.onnx")], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "onnx:" in res.stdout and (tmp_path / "dqn.onnx").stat().st_size < 100_000
    policy, loaded = OnnxPolicy(tmp_path / "dqn.onnx"), load_agent(out["run_dir"])
    assert policy.meta["agent"] == "dqn" and policy.meta["step"] == out["step"]
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    obs, info = core.reset(seed=0)
    for _ in range(50):
        a, _ = policy.predict(obs[0].numpy())
        b, _ = loaded.predict(obs[0].numpy())
        assert int(a) == int(b)
        obs, *_, info = core.step(torch.as_tensor([int(a)]))


def test_bad_exports_say_why_and_write_nothing(tmp_path):
    cfg = cfg_of(BASE + CASES["heuristic"], tmp_path)
    out = train(cfg, [])
    with pytest.raises(NotImplementedError, match="agent=heuristic: has no exportable acting step"):
        export_onnx(out["run_dir"], tmp_path / "h.onnx")
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(out["run_dir"], tmp_path / "h.pt")
    assert not list(tmp_path.glob("h.*"))
    res = run_cli("scripts/export_policy.py", [out["run_dir"], "--onnx", str(tmp_path / "h.onnx")], tmp_path)
    assert res.returncode != 0 and "no exportable acting step" in res.stderr
    assert not (tmp_path / "h.onnx").exists()


def test_onnx_policy_refuses_foreign_models_and_a_missing_mask(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), tmp_path / "foreign.onnx")
    with pytest.raises(ValueError, match="was not written by export_onnx"):
        OnnxPolicy(tmp_path / "foreign.onnx")
    agent, cfg = _agent(AGENTS["dqn_hole"])
    policy = OnnxPolicy(onnx_model(agent, make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu")),
                                   check_steps=2))
    with pytest.raises(ValueError, match="masked: pass mask="):
        policy.predict(np.zeros(agent.obs_dim, np.float32))


def test_onnx_decision_of_a_multidiscrete_dreamer():
    """A MultiDiscrete([3, 4]) Dreamer (tests/test_dreamer.py's Pair env): the export returns the action as [2]
    integers, each dimension the agent's own."""
    from test_dreamer import Pair, tiny

    agent = tiny(obs_dim=4, n_actions=Pair.nvec)
    policy = OnnxPolicy(onnx_model(agent, Pair(B=1), check_steps=6))
    env = Pair(B=1)
    obs, info = env.reset(seed=0)
    state = agent.initial_state(1)
    for t in range(12):
        ort_state = _numpy_state(agent, state)
        with torch.no_grad():
            action, state = agent.act(obs, state, info, deterministic=True)
        mask = info["action_mask"].numpy() if "action_mask" in info else None
        start = t == 0 or bool(info.get("_final_obs", torch.zeros(1, dtype=torch.bool))[0])  # Pair's episode ends
        a, _ = policy.predict(obs[0].numpy(), ort_state, start, mask)
        assert a.shape == (2,) and a.tolist() == action[0].tolist()
        obs, _, _, _, info = env.step(action)
