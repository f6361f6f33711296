"""agent=dreamer_rl2 (DreamerV3 with the trial as the unit): resets only at trial_start, no terminal and no
extra record at inner episode ends, continue target 0 only at trial ends, replayed windows that span inner
episode boundaries from stored latents, resume of a half-finished trial, the config switches, and (slow)
Duan et al.'s bandit at a reduced threshold."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from script_module import load_script

from dreamalloc.agents import agent_classes, make_agent
from dreamalloc.agents.dreamer import DreamerRL2Agent
from dreamalloc.experiment.config import register_configs
from dreamalloc.metatasks.env import TabularMDPCore

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(deter=32, hidden=16, stoch=4, classes=4, blocks=4, units=16, enc_layers=1, dec_layers=1,
            ac_layers=1, batch_size=4, batch_length=12, imag_length=5, learning_starts=16, train_ratio=8.0,
            replay_size=4096, warmup=0, bins=31)
H, K = 3, 3  # steps per episode, episodes per trial of the test MDP


def mdp(B=2):
    return TabularMDPCore(B, states=3, actions=2, horizon=H, episodes=K)


def agent(name="dreamer_rl2", core=None, **kw):
    core = core or mdp()
    return make_agent(name, core.obs_dim, core.n_actions, core.spec, "cpu", **{**TINY, **kw})


def drive(ag, core, steps, seed=0, obs_info=None, state=None, learn=False):
    """The harness's act / observe (/ update) cycle; returns (obs, info, state, actions, infos)."""
    obs, info = obs_info if obs_info is not None else core.reset(seed=seed)
    state = ag.initial_state(core.B) if state is None else state
    actions, infos = [], [info]
    for t in range(steps):
        a, state = ag.act(obs, state, info)
        nxt, r, te, tr, info = core.step(a)
        ag.observe(obs, a, r, te, tr, info.get("final_obs", nxt), info)
        obs = nxt
        actions.append(a.clone())
        infos.append(info)
        if learn:
            ag.update(t)
    return obs, info, state, actions, infos


def records(ag, row=0):
    n = int(ag.replay.written[row])
    rp = ag.replay
    return {k: getattr(rp, k)[row, :n] for k in ("obs", "prev_action", "reward", "first", "terminal", "last",
                                                   "deter")}


def test_agent_is_registered_and_meta_by_default():
    assert agent_classes()["dreamer_rl2"] is DreamerRL2Agent
    assert agent().cfg.meta is True
    assert agent("dreamer").cfg.meta is False


def test_preset_composes_with_meta_on():
    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["agent=dreamer_rl2", "experiment=adversarial_hidden"])
    assert cfg.agent.name == "dreamer_rl2" and cfg.agent.meta is True and cfg.agent.reset_at == "trial"
    hp = {k: v for k, v in cfg.agent.items() if k != "name"}
    ag = make_agent("dreamer_rl2", 10, 3, None, "cpu", **hp)
    assert ag.cfg.deter == cfg.agent.deter


@pytest.mark.parametrize("bad, msg", [(dict(reset_at="step"), "reset_at"), (dict(meta="yes"), "meta must be")])
def test_bad_switches_are_refused_by_name(bad, msg):
    with pytest.raises(ValueError, match=msg):
        agent(**bad)


def test_meta_replay_is_one_sequence_per_trial():
    """Steps of 2 full trials: one record per step plus one final record per trial (not per episode); first
    only at trial starts; terminal / last only on the trials' final records; the record after an inner episode
    end carries the last action and reward of the previous episode and a carried (non-zero) latent."""
    core = mdp()
    ag = agent(core=core)
    _, _, _, actions, infos = drive(ag, core, 2 * H * K)
    rec = records(ag, 0)
    assert len(rec["first"]) == 2 * H * K + 2
    first = rec["first"].nonzero().squeeze(1).tolist()
    assert first == [0, H * K + 1]
    assert rec["last"].nonzero().squeeze(1).tolist() == [H * K, 2 * H * K + 1]
    assert rec["terminal"].nonzero().squeeze(1).tolist() == [H * K, 2 * H * K + 1]
    # record H is the first obs of episode 2 (episode-start flag, the obs's last feature, is 1), not first
    assert rec["obs"][H, -1] == 1.0 and not rec["first"][H]
    assert int(rec["prev_action"][H]) == int(actions[H - 1][0])
    assert float(rec["deter"][H].abs().sum()) > 0.0  # the latent was carried over the episode boundary
    assert float(rec["deter"][0].abs().sum()) == 0.0  # and zero at the trial's start


def test_non_meta_and_reset_per_episode_mark_every_episode():
    core = mdp()
    ag = agent("dreamer", core=core, reset_at="episode")
    drive(ag, core, H * K)
    rec = records(ag, 0)
    assert len(rec["first"]) == H * K + K  # a final record per episode
    assert rec["first"].nonzero().squeeze(1).tolist() == [0, H + 1, 2 * H + 2]
    assert rec["terminal"].nonzero().squeeze(1).tolist() == [H, 2 * H + 1, 3 * H + 2]
    # meta with reset_at=episode: one sequence per trial, but the latent is zeroed at every episode start
    ag = agent(core=mdp(), reset_at="episode")
    drive(ag, ag_core := mdp(), H * K)
    rec = records(ag, 0)
    assert rec["first"].nonzero().squeeze(1).tolist() == [0, H, 2 * H]
    assert rec["terminal"].nonzero().squeeze(1).tolist() == [H * K]
    assert ag_core.B == 2


def test_acting_resets_only_at_trial_start():
    """The latent an action is drawn from is zeroed at trial starts only (meta), at every episode (reset_at)."""
    for reset_at, expect in (("trial", [0, H * K]), ("episode", [0, H, 2 * H, H * K, H * K + H, H * K + 2 * H])):
        core = mdp()
        ag = agent(core=core, reset_at=reset_at)
        obs, info = core.reset(seed=0)
        state = ag.initial_state(core.B)
        zeroed = []
        for t in range(2 * H * K):
            a, state = ag.act(obs, state, info)
            if bool(ag._pending["first"][0]):
                zeroed.append(t)
            obs, r, te, tr, info = core.step(a)
        assert zeroed == expect, reset_at


def test_continue_target_is_zero_only_at_trial_end():
    core = mdp()
    ag = agent(core=core)
    drive(ag, core, 3 * H * K)
    data = ag.replay.sample(8, TINY["batch_length"])
    con_target = (~data["terminal"]).float()
    ends = data["last"]
    assert bool(((con_target == 0) == ends).all())  # every end of a window's sequence is a trial end
    episode_start = data["obs"][..., -1] == 1.0
    inner = episode_start & ~data["first"]
    assert bool(inner.any())  # windows span inner episode boundaries ...
    assert bool((con_target[inner] == 1).all())  # ... where the continue target stays 1


def test_replay_context_starts_windows_from_the_stored_latent():
    core = mdp()
    ag = agent(core=core, replay_context=True)
    drive(ag, core, 4 * H * K)
    seen = {}
    orig = ag.wm.loss

    def spy(data, deter0, stoch0):
        seen["deter0"], seen["data"] = deter0.clone(), data
        return orig(data, deter0, stoch0)

    ag.wm.loss = spy
    # windows are sampled: train until one opens inside a trial past its second step (the deterministic state
    # after a trial's first step is exactly 0: zero carry, zero action, normed layers), and check every update
    # starts its windows from the stored latents
    found = False
    for _ in range(20):
        ag.train_step()
        assert torch.equal(seen["deter0"], seen["data"]["deter"][:, 0])
        mid = ~seen["data"]["first"][:, 0]
        if bool((seen["deter0"][mid].abs().sum(-1) > 0).any()):
            found = True
            break
    assert found, "no replayed window opened inside a trial from a stored non-zero latent in 20 updates"
    ag2 = agent(core=mdp(), replay_context=False)
    drive(ag2, core2 := mdp(), 4 * H * K)
    ag2.wm.loss = lambda data, d0, s0: (seen.update(d2=d0.clone()), orig.__func__(ag2.wm, data, d0, s0))[1]
    ag2.train_step()
    assert float(seen["d2"].abs().sum()) == 0 and core2.B == 2


def test_trains_with_finite_losses_on_the_trial_stream():
    core = mdp(B=4)
    ag = agent(core=core)
    drive(ag, core, 60, learn=True)
    assert ag.n_updates > 0
    assert all(np.isfinite(v) for v in ag.metrics.values())


def test_resume_continues_a_half_finished_trial_exactly():
    core = mdp()
    ag = agent(core=core)
    obs, info, state, _, _ = drive(ag, core, H * K + H + 1, learn=True)  # inside episode 2 of trial 2
    saved_agent, saved_env = ag.state_dict(), core.state_dict()
    torch.manual_seed(7)
    _, _, _, cont_a, _ = drive(ag, core, 2 * H, obs_info=(obs, info), state=state)
    core2 = mdp()
    core2.load_state_dict(saved_env)
    ag2 = agent(core=core2)
    ag2.load_state_dict(saved_agent)
    obs2, info2 = core2.current()
    torch.manual_seed(7)
    _, _, _, cont_b, _ = drive(ag2, core2, 2 * H, obs_info=(obs2, info2), state=ag2.initial_state(core2.B))
    assert all(torch.equal(a, b) for a, b in zip(cont_a, cont_b, strict=True))
    assert ag2.initial_state(core2.B)["deter"].abs().sum() == 0  # handed out once, then zeros


def test_masked_and_multidiscrete_actions_still_work():
    ag = make_agent("dreamer_rl2", 4, [2, 3], None, "cpu", **TINY)
    B = 2
    obs = torch.randn(B, 4)
    state = ag.initial_state(B)
    info = {"trial_start": torch.tensor([True, True]), "action_mask": torch.tensor([[1, 1, 1, 0, 1]] * B).bool()}
    for t in range(20):
        a, state = ag.act(obs, state, info)
        assert a.shape == (B, 2) and bool((a[:, 1] != 1).all())
        end = torch.tensor([t % 5 == 4] * B)
        nxt = torch.randn(B, 4)
        step_info = {"trial_start": end.clone(), "trial_end": end.clone(), "episode_start": end.clone(),
                     "action_mask": info["action_mask"]}
        ag.observe(obs, a, torch.ones(B), end, torch.zeros(B, dtype=torch.bool), nxt, step_info)
        obs, info = nxt, step_info
    assert "mask" in ag.replay.sample(2, 8)
    assert np.isfinite(ag.train_step()["loss"])


def test_recurrent_actor_critic_resets_with_the_latent_and_trains():
    core = mdp()
    ag = agent(core=core, ac_gru=8)
    assert agent(core=mdp()).ac.gru is None  # off by default
    obs, info = core.reset(seed=0)
    state = ag.initial_state(core.B)
    norms = []
    for _ in range(H * K + 1):
        a, state = ag.act(obs, state, info)
        norms.append(float(state["ac_h"][0].abs().sum()))
        nxt, r, te, tr, info = core.step(a)
        ag.observe(obs, a, r, te, tr, info.get("final_obs", nxt), info)
        obs = nxt
    assert state["ac_h"].shape == (core.B, 8) and all(n > 0 for n in norms)
    # the GRU state of a trial's first step depends on that step only (reset), later ones on the history
    fresh = ag.initial_state(core.B)
    fresh["deter"], fresh["stoch"] = state["deter"], state["stoch"]
    start = {"trial_start": torch.ones(core.B, dtype=torch.bool)}
    torch.manual_seed(1)
    _, s1 = ag.act(obs, state, start)
    torch.manual_seed(1)
    _, s2 = ag.act(obs, fresh, start)
    assert torch.allclose(s1["ac_h"], s2["ac_h"])
    before = [p.clone() for p in ag.ac.gru.parameters()]
    drive(ag, core, 40, obs_info=(obs, info), state=state, learn=True)
    assert ag.n_updates > 0 and all(np.isfinite(v) for v in ag.metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, ag.ac.gru.parameters(), strict=True))
    ag2 = agent(core=mdp(), ac_gru=8)
    ag2.load_state_dict(ag.state_dict())
    assert torch.equal(ag2.initial_state(core.B)["ac_h"], ag._last_state["ac_h"])


def _sanity():
    mod = load_script("rl2_sanity")
    return mod


def test_sanity_extra_updates_add_updates_not_env_steps(tmp_path):
    """rl2_sanity --extra-updates: the updates after training are counted, the env steps are not, the monitoring
    curve is written, and a resumed agent continues from its saved update count (and refuses without a replay)."""
    san = _sanity()
    common = ["--agent", "dreamer_rl2", "--task", "bandit10", "--seed", "0", "--trials", "64", "--envs", "16",
              "--hp", "learning_starts=256", "batch_size=4", "batch_length=8", "imag_last=2"]
    base = san.main([*common, "--steps", "512", "--save", str(tmp_path / "a.pt")])
    out = san.main([*common, "--steps", "512", "--extra-updates", "3", "--extra-log", "2"])
    assert out["steps"] == base["steps"] and out["updates"] == base["updates"] + 3
    assert [i for i, _, _ in out["extra_curve"]] == [2, 3]
    assert all(0.0 < r <= 6.66 for _, r, _ in out["extra_curve"])
    res = san.main([*common, "--steps", "0", "--resume", str(tmp_path / "a.pt"), "--extra-updates", "2"])
    assert res["steps"] == 0 and res["updates"] == base["updates"] + 2
    with pytest.raises(SystemExit, match="no replay"):
        san.extra_updates(type("NoReplay", (), {"replay": None})(), 1, 0, None, [])


def test_sanity_model_selection_keeps_the_best_weights_and_leaves_training_alone():
    """rl2_sanity --select-every: the agent is scored every N env steps and at the end on monitoring instances;
    training and the final weights' evaluation are those of the same run without selection; the kept weights are
    the best-scoring ones (a tie goes to the later) and re-score their recorded value; bad values are refused."""
    san = _sanity()
    common = ["--agent", "dreamer_rl2", "--task", "bandit10", "--seed", "1", "--trials", "64", "--envs", "16",
              "--steps", "640", "--hp", "learning_starts=256", "batch_size=4", "batch_length=8", "imag_last=2",
              "train_ratio=4"]
    base = san.main(common)
    out = san.main([*common, "--select-every", "256", "--select-trials", "50"])
    for k in ("greedy", "sampled", "curve", "train_last_1000_trials", "updates", "greedy_bayes_regret"):
        assert out[k] == base[k], k
    sel = out["selection"]
    steps = [s for s, _ in sel["history"]]
    assert steps == [256, 512, 640]  # every 256 env steps (16 envs: 16-step strides), then the final weights
    scores = [v for _, v in sel["history"]]
    best = max(scores)
    assert sel["best_score"] == best and sel["best_step"] == max(s for s, v in sel["history"] if v == best)
    assert all(0.0 < v <= 6.66 for v in scores)
    # the kept weights, loaded into a fresh agent, score what selection recorded on the same instances
    make_core = san.TASKS["bandit10"][0]
    hp = dict(san.DREAMER_HP, learning_starts=256, batch_size=4, batch_length=8, imag_last=2, train_ratio=4)
    core = make_core(16)

    def monitor(ag):
        return float(san.evaluate_trials(ag, make_core(50), 50, seed=san.MONITOR_SEED, deterministic=True).mean())

    torch.manual_seed(1)
    agent = san.DreamerRL2Agent(core.obs_dim, core.n_actions, core.spec, "cpu", **hp)
    selection = san.Selection(256, monitor)
    san.train(agent, core, 640, 1, None, 10**9, None, selection)
    fresh = san.DreamerRL2Agent(core.obs_dim, core.n_actions, core.spec, "cpu", **hp)
    fresh.load_state_dict(selection.best_state)
    assert monitor(fresh) == selection.best_score
    assert len(selection.history) == 3 and selection.best_score == max(v for _, v in selection.history)
    with pytest.raises(SystemExit):
        san.main([*common, "--select-every", "-1"])
@pytest.mark.slow
def test_bandit10_dreamer_rl2_beats_random_clearly():
    """Acceptance 1 at a reduced threshold: the docs/rl2.md run (seed 0, 150,000 env steps, greedy 5.94
    [5.78, 6.10]; 25 min on the shared 2-core machine) must stay well above random (5.01 [4.89, 5.14])."""
    out = _sanity().main(["--agent", "dreamer_rl2", "--task", "bandit10", "--steps", "150000", "--seed", "0",
                          "--log-every", "1000000"])
    mean, lo, _ = out["greedy"]
    assert mean >= 5.6 and lo > out["baselines"]["random"][2], out["greedy"]


@pytest.mark.slow
def test_adapts_within_a_trial_on_adversarial_hidden(tmp_path):
    """Acceptance 2 at a reduced threshold: the docs/rl2.md command (seed 0, 125,000 env steps; last episode
    3.57 / 3.58, gain 0.93 / 0.80 on blind4 / sighted5; 18 min on the shared 2-core machine) adapts on both
    held-out adversarial sets, intervals apart, with a last episode of at least 3.4."""
    import json
    import os
    import subprocess

    from dreamalloc.report.tables import adaptation_rows

    args = ["experiment=adversarial_hidden", "agent=dreamer_rl2", "env.num_envs=32", "agent.train_ratio=16",
            "steps=125000", "seed=0", "logger=disabled", "progress=off", f"hydra.run.dir={tmp_path}",
            f"run_name=test_{tmp_path.name}"]
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=5400, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(next(tmp_path.glob("eval/step_*/results.json")).read_text())
    rows = {r["set"]: r for r in adaptation_rows(res)}
    for name in ("blind4", "sighted5"):
        assert rows[name]["adapts"] and rows[name]["last_ep"][0] >= 3.4, rows[name]
