"""DQN: SB3's schedules and counters, masking, TD targets by hand, checkpoints, learning, the CLI, CartPole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dreamalloc.agents import agent_classes, make_agent
from dreamalloc.agents.dqn import DQNAgent
from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.driver import drive, evaluate
from dreamalloc.core.gym_vec import GymVecCore
from dreamalloc.experiment.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.training import run_checkpoint_dir, train

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["env=alloc64", "env.num_envs=8", "suite=lim2024_mixed", "eval.trials=2", "eval.episodes_per_trial=1",
         "eval.timeline=false", "logger=disabled", "progress=off"]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def constant_q(net: torch.nn.Module, values) -> None:
    """Make a Q-net output ``values`` for every input (zero weights, the values as the last bias)."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[-1].bias.copy_(torch.as_tensor(values, dtype=torch.float32))


class Chain:
    """A tiny batched env with AllocCore's face. States 0..L-1 (one-hot): action 1 moves
    right, action 0 ends the episode (terminated, reward 0); reaching the end pays 1 (terminated). Episodes
    longer than ``limit`` steps are truncated. Random play finishes with probability 2^-(L-1)."""

    def __init__(self, B: int, length: int = 4, limit: int = 100):
        self.B, self.L, self.limit = B, length, limit
        self.obs_dim, self.n_actions = length, 2
        self.pos = torch.zeros(B, dtype=torch.long)
        self.t = torch.zeros(B, dtype=torch.long)
        self.ret = torch.zeros(B, dtype=torch.float64)

    def _obs(self):
        return torch.nn.functional.one_hot(self.pos, self.L).float()

    def reset(self, seed=None):
        self.pos.zero_()
        self.t.zero_()
        self.ret.zero_()
        return self._obs(), {}

    def step(self, action):
        a = action.long()
        self.pos = torch.where(a == 1, self.pos + 1, self.pos)
        self.t += 1
        reward = (self.pos == self.L - 1).double()
        term = (a == 0) | (self.pos == self.L - 1)
        trunc = ~term & (self.t >= self.limit)
        self.ret += reward
        final = self._obs()
        done = term | trunc
        info = {}
        if done.any():
            info = {"final_obs": final, "_final_obs": done.clone(), "episode": {"r": self.ret.clone()},
                    "_episode": done.clone()}
            self.pos = torch.where(done, 0, self.pos)
            self.t = torch.where(done, 0, self.t)
            self.ret = torch.where(done, 0.0, self.ret)
        return self._obs(), reward, term, trunc, info


# --- schedules and counters ------------------------------------------------------------------------------------
def test_epsilon_schedule_is_sb3s_linear_schedule():
    """SB3's get_linear_fn(1.0, 0.05, 0.1) at progress t / total: 1 - 9.5 t / total until 10 %, then 0.05."""
    agent = DQNAgent(4, 3, None, "cpu", total_steps=1000)  # Lim's defaults: 1.0 -> 0.05 over 10 %
    for t in (0, 1, 25, 50, 99, 100, 101, 500, 1000, 2000):
        assert agent.epsilon(t) == pytest.approx(max(1.0 - 9.5 * t / 1000, 0.05), abs=1e-12), t
    assert agent.epsilon(0) == 1.0 and agent.epsilon(50) == pytest.approx(0.525) and agent.epsilon(100) == 0.05
    with pytest.raises(ValueError, match="total_steps"):
        DQNAgent(4, 3, None, "cpu")  # the schedule needs the run's length
    assert DQNAgent(4, 3, None, "cpu", exploration_fraction=0.0).epsilon(0) == 0.05


def test_exploration_rate_in_action_choices():
    """Random until learning_starts; then a greedy action except for an epsilon fraction of uniform ones."""
    B, A = 4000, 4
    agent = DQNAgent(3, A, None, "cpu", total_steps=1000, learning_starts=10)
    constant_q(agent.q, [0.0, 0.0, 5.0, 0.0])
    obs = torch.zeros(B, 3)
    a, _ = agent.act(obs, None, {})
    assert abs((a == 2).float().mean().item() - 1 / A) < 0.03  # warm-up: uniform
    agent.env_steps = 50  # epsilon 0.525
    a, _ = agent.act(obs, None, {})
    assert abs((a != 2).float().mean().item() - 0.525 * (A - 1) / A) < 0.03
    assert bool((agent.act(obs, None, {}, deterministic=True)[0] == 2).all())


def test_target_sync_and_training_counted_like_sb3():
    """Target update every max(interval // B, 1) env calls; a training round every train_freq calls once
    env_steps > learning_starts, with gradient_steps (-1: train_freq x B) gradient steps."""
    for B, interval, grad, per_round in ((1, 10, 1, 1), (4, 10, -1, 12), (3, 2, 2, 2)):
        core = Chain(B)
        agent = DQNAgent(core.obs_dim, 2, None, "cpu", total_steps=400, learning_starts=20, train_freq=3,
                         target_update_interval=interval, gradient_steps=grad, lr=1e-2)
        obs, info = core.reset()
        syncs, updates = [], 0
        for call in range(1, 41):
            before = [p.clone() for p in agent.q_target.parameters()]
            action, _ = agent.act(obs, None, info)
            next_obs, r, te, tr, info = core.step(action)
            agent.observe(obs, action, r, te, tr, info.get("final_obs", next_obs), info)
            synced = agent.target_syncs == len(syncs) + 1
            if synced:
                syncs.append(call)
                assert all(torch.equal(t, q) for t, q in zip(agent.q_target.parameters(), agent.q.parameters(),
                                                                strict=True))
            else:
                assert all(torch.equal(t, b) for t, b in zip(agent.q_target.parameters(), before, strict=True))
            agent.update(call * B)
            obs = next_obs
            if call % 3 == 0 and call * B > 20:
                updates += per_round
            assert agent.n_updates == updates, (B, call)
        every = max(interval // B, 1)
        assert syncs == list(range(every, 41, every))
        assert updates > 0


# --- masking -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["address", "hole"])
def test_no_invalid_action_is_ever_chosen(space):
    """Random warm-up, epsilon-greedy and greedy actions all respect the mask, even when the Q-net prefers
    an invalid action."""
    cfg = AllocConfig(cells=32, stream="random", action=space, holes=4).validate()
    core = AllocCore(32, cfg)
    agent = DQNAgent(cfg.obs_dim, cfg.n_actions, cfg, "cpu", total_steps=600, learning_starts=100,
                     exploration_fraction=0.5, batch_size=16)
    obs, info = core.reset(seed=3)
    preferred_invalid = 0
    for step in range(0, 600, 32):
        if step == 320:
            constant_q(agent.q, torch.arange(cfg.n_actions).float())  # prefers the last action, often invalid
        if step >= 320:
            preferred_invalid += int((~info["action_mask"][:, -1]).sum())
        for det in (False, True):
            a, _ = agent.act(obs, None, info, deterministic=det)
            assert bool(info["action_mask"].gather(1, a[:, None]).all()), (step, det)
        action, _ = agent.act(obs, None, info)
        assert bool(info["action_mask"].gather(1, action[:, None]).all()), step
        next_obs, r, te, tr, info = core.step(action)
        assert bool((r != cfg.invalid_reward).all())
        agent.observe(obs, action, r, te, tr, info.get("final_obs", next_obs), info)
        agent.update(step + 32)
        obs = next_obs
    assert agent.n_updates > 0 and preferred_invalid > 50


def test_bootstrap_max_uses_only_valid_next_actions():
    agent = DQNAgent(3, 3, None, "cpu", total_steps=100, gamma=0.5, double_q=False)
    constant_q(agent.q_target, [5.0, 1.0, 3.0])
    batch = {"next_obs": torch.zeros(3, 3), "rewards": torch.tensor([1.0, 1.0, 1.0]),
             "terminated": torch.tensor([False, False, True]),
             "next_mask": torch.tensor([[False, True, True], [True, True, True], [False, True, True]])}
    assert agent.targets(batch).tolist() == [1.0 + 0.5 * 3.0, 1.0 + 0.5 * 5.0, 1.0]
    agent.cfg.double_q = True  # a' by the online net, among the valid actions, valued by the target net
    constant_q(agent.q, [9.0, 8.0, 0.0])
    assert agent.targets(batch).tolist() == [1.0 + 0.5 * 1.0, 1.0 + 0.5 * 5.0, 1.0]


def test_stored_next_mask_is_the_final_states_at_episode_ends():
    """Where an episode ends, the transition's next state is the pre-reset final one: the stored next mask
    must be the final state's (from final_info), not the fresh episode's."""
    agent = DQNAgent(2, 3, None, "cpu", total_steps=100)
    obs = torch.zeros(2, 2)
    done = torch.tensor([True, False])
    info = {"action_mask": torch.tensor([[True, True, True], [True, False, False]]), "_final_obs": done,
            "final_info": {"action_mask": torch.tensor([[False, False, True], [False, True, False]])}}
    agent.observe(obs, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.float64), done, torch.tensor([False, False]),
                  obs + 1, info)
    assert agent.replay.next_mask[:2].tolist() == [[False, False, True], [True, False, False]]


# --- TD targets: termination vs truncation ---------------------------------------------------------------------
def test_terminal_and_truncated_targets_on_a_hand_made_batch():
    """Row 0 terminated (target = r), row 1 truncated (target = r + gamma max Q_target(final obs), the final
    obs and not the reset obs), row 2 running (bootstrap from the next obs)."""
    agent = DQNAgent(2, 2, None, "cpu", total_steps=100, gamma=0.9, hidden=[])  # Q = W obs + b: linear
    with torch.no_grad():
        agent.q_target[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        agent.q_target[0].bias.zero_()
    obs = torch.zeros(3, 2)
    final = torch.tensor([[7.0, 1.0], [1.0, 4.0], [3.0, 1.0]])  # Q_target: [7, 2], [1, 8], [3, 2]
    reset_obs = torch.full((3, 2), 100.0)
    info = {"final_obs": final, "_final_obs": torch.tensor([True, True, False])}
    agent.observe(obs, torch.tensor([0, 1, 0]), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                  torch.tensor([True, False, False]), torch.tensor([False, True, False]), final, info)
    del reset_obs  # what the env would return next; the agent must never bootstrap from it
    batch = {k: getattr(agent.replay, k)[:3] if getattr(agent.replay, k) is not None else None
             for k in agent.replay.KEYS}
    assert batch["terminated"].tolist() == [True, False, False]
    np.testing.assert_allclose(agent.targets(batch).numpy(), [1.0, 2.0 + 0.9 * 8.0, 3.0 + 0.9 * 3.0])


# --- replay ----------------------------------------------------------------------------------------------------
def test_replay_grows_then_wraps():
    agent = DQNAgent(2, 2, None, "cpu", total_steps=5, buffer_size=12)
    rp = agent.replay
    for i in range(8):  # 3 envs per call: 24 transitions into a ring of 12
        o = torch.full((3, 2), float(i))
        agent.observe(o, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.float64),
                      torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), o, {})
        assert rp.rows <= 12 and rp.size == min(3 * (i + 1), 12)
        if i == 0:
            # min(buffer_size, total_steps) at first, not buffer_size, in whole batches: a 5-step run of 3 envs
            # makes 2 calls, and a 5-row buffer would double (and copy) at the second
            assert rp.rows == 6
    assert rp.pos == 0 and rp.obs[:, 0].tolist() == [4.0] * 3 + [5.0] * 3 + [6.0] * 3 + [7.0] * 3
    big = DQNAgent(2, 2, None, "cpu", total_steps=100)  # buffer 1e6: nothing allocated up front
    assert big.replay.rows == 0 and big.replay.obs is None


# --- checkpoints -----------------------------------------------------------------------------------------------
def test_save_load_continues_identically(tmp_path):
    """Agent and env restored mid-run (through bytes, as a checkpoint would) take the same actions and end
    with the same weights as the original; without the replay the buffer starts empty."""
    cfg = AllocConfig(cells=32, stream="random", action="hole", holes=4).validate()
    hp = dict(total_steps=800, learning_starts=64, batch_size=16, target_update_interval=96, lr=1e-3)
    torch.manual_seed(1)
    a1, c1 = DQNAgent(cfg.obs_dim, cfg.n_actions, cfg, "cpu", **hp), AllocCore(8, cfg)
    drive(a1, c1, 400, seed=5)
    path = save_checkpoint(tmp_path / "rt.safetensors", {"agent": a1.state_dict(include_replay=True),
                                                          "env": c1.state_dict()})
    saved = load_checkpoint(path)
    torch.manual_seed(99)  # a different init: everything must come from the checkpoint
    a2, c2 = DQNAgent(cfg.obs_dim, cfg.n_actions, cfg, "cpu", **hp), AllocCore(8, cfg)
    a2.load_state_dict(saved["agent"])
    c2.load_state_dict(saved["env"])
    assert a2.replay.size == a1.replay.size == 400 and a2.env_steps == 400 and a2.n_updates == a1.n_updates
    step = 400
    o1, i1 = c1.current()
    o2, i2 = c2.current()
    for _ in range(40):
        x1, _ = a1.act(o1, None, i1)
        x2, _ = a2.act(o2, None, i2)
        assert torch.equal(x1, x2)
        n1, r1, t1, u1, i1 = c1.step(x1)
        n2, r2, t2, u2, i2 = c2.step(x2)
        a1.observe(o1, x1, r1, t1, u1, i1.get("final_obs", n1), i1)
        a2.observe(o2, x2, r2, t2, u2, i2.get("final_obs", n2), i2)
        step += 8
        a1.update(step)
        a2.update(step)
        o1, o2 = n1, n2
    for net in ("q", "q_target"):
        for (k, v1), v2 in zip(getattr(a1, net).state_dict().items(), getattr(a2, net).state_dict().values(),
                               strict=True):
            assert torch.equal(v1, v2), (net, k)
    assert a1.n_updates == a2.n_updates > 0 and a1.target_syncs == a2.target_syncs > 0
    lean = DQNAgent(cfg.obs_dim, cfg.n_actions, cfg, "cpu", **hp)
    lean.load_state_dict(a1.state_dict(include_replay=False))
    assert lean.replay.size == 0 and lean.env_steps == a1.env_steps
    assert lean.update(step) is not None  # nothing to sample: no training, no error


# --- learning --------------------------------------------------------------------------------------------------
def test_learning_rises_on_a_chain():
    """A 4-state chain paying 1 only at its end (3 'right' moves in a row; 'left' ends the episode with 0):
    random play scores 1/8, the learnt greedy policy 1. Needs termination handled and values bootstrapped."""
    torch.manual_seed(0)
    agent = DQNAgent(4, 2, None, "cpu", total_steps=3000, lr=3e-3, gamma=0.9, learning_starts=200,
                     target_update_interval=200, exploration_fraction=0.3, hidden=[16])
    returns = drive(agent, Chain(4), 3000)
    after = evaluate(agent, Chain(8), 16)
    assert after.mean() == 1.0, after
    assert np.mean(returns[:100]) < 0.3 and np.mean(returns[-100:]) > 0.7


def test_learning_rises_on_a_contextual_bandit():
    """One-step episodes whose cue says which of 4 actions pays: accuracy rises from chance to all correct."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    class Bandit:
        B, obs_dim, n_actions = 16, 4, 4

        def _draw(self):
            self.cue = torch.randint(0, 4, (self.B,), generator=gen)
            return torch.nn.functional.one_hot(self.cue, 4).float()

        def reset(self, seed=None):
            return self._draw(), {}

        def step(self, action):
            r = (action == self.cue).double()
            done = torch.ones(self.B, dtype=torch.bool)
            final = torch.nn.functional.one_hot(self.cue, 4).float()
            info = {"final_obs": final, "_final_obs": done, "episode": {"r": r.clone()}, "_episode": done}
            return self._draw(), r, done, torch.zeros_like(done), info

    agent = DQNAgent(4, 4, None, "cpu", total_steps=4000, lr=3e-3, learning_starts=200, hidden=[16],
                     exploration_fraction=0.2, train_freq=1)
    returns = drive(agent, Bandit(), 4000)
    assert np.mean(returns[:200]) < 0.35 and np.mean(returns[-400:]) > 0.9
    assert evaluate(agent, Bandit(), 64).mean() == 1.0


# --- configuration and the CLI -----------------------------------------------------------------------------------
def test_discovered_with_schema_and_lim_defaults():
    assert agent_classes()["dqn"] is DQNAgent
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=lim2024_mixed", "agent=dqn"])
    assert OmegaConf.get_type(cfg.agent).__name__ == "DQNConfig"
    a = cfg.agent
    assert (a.total_steps, cfg.env.num_envs, cfg.env.history, cfg.eval.trials) == (50_000, 1, 10, 100)
    assert list(a.hidden) == [32, 32] and a.activation == "relu" and a.lr == 1e-4 and a.gamma == 1.0
    assert (a.buffer_size, a.learning_starts, a.batch_size, a.train_freq, a.gradient_steps) == (10**6, 100, 32, 4, 1)
    assert a.target_update_interval == 10_000 and a.max_grad_norm == 10.0
    assert (a.exploration_fraction, a.exploration_initial_eps, a.exploration_final_eps) == (0.1, 1.0, 0.05)
    with pytest.raises(ValueError, match="batch_sise"):
        make_agent("dqn", 4, 2, None, "cpu", total_steps=10, batch_sise=3)
    with pytest.raises(ValueError, match="gamma"):
        make_agent("dqn", 4, 2, None, "cpu", total_steps=10, gamma=1.5)


def _cli(args, cwd):
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=240, env=env)


def test_train_cli_and_resume_from_a_checkpoint(tmp_path):
    """train.py agent=dqn with a tiny budget and a mid-run checkpoint; resuming from that checkpoint (replay,
    RNG and counters included: save_replay=true, as DQN leaves its replay out by default) ends with exactly the
    weights of the uninterrupted run."""
    over = ["agent=dqn", "steps=512", "checkpoint_every=256", "agent.learning_starts=64", "save_replay=true",
            "agent.target_update_interval=128", *QUICK, f"checkpoint_dir={tmp_path}/ckpt"]
    r = _cli([*over, f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| mixed" in r.stdout
    ckdir = run_checkpoint_dir(tmp_path / "run")
    full = load_checkpoint(checkpoint_path(ckdir, 512))
    assert full["meta"]["agent"] == "dqn" and full["config"]["agent"]["total_steps"] == 512
    a = full["agent"]
    assert a["env_steps"] == 512 and a["target_syncs"] == 4 and a["replay"]["size"] == 512
    assert a["n_updates"] == len([c for c in range(1, 65) if c % 4 == 0 and 8 * c > 64])  # SB3's rounds
    checkpoint_path(ckdir, 512).unlink()
    # The resume, in-process (the CLI's own path, without a second interpreter start-up).
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*over, f"resume={checkpoint_path(ckdir, 256)}"])
    cfg.run_dir = str(tmp_path / "run")
    assert train(cfg)["step"] == 512
    resumed = load_checkpoint(checkpoint_path(ckdir, 512))["agent"]
    assert resumed["n_updates"] == a["n_updates"] and resumed["target_syncs"] == a["target_syncs"]
    for net in ("q", "q_target"):
        for k, v in a[net].items():
            assert torch.equal(v, resumed[net][k]), (net, k)


# --- CartPole-v1 with rl-baselines3-zoo's DQN settings (slow) ---------------------------------------------------
CARTPOLE = dict(lr=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                exploration_final_eps=0.04, hidden=[256, 256], total_steps=50_000)


@pytest.mark.slow
def test_cartpole_reaches_400():
    """rl-baselines3-zoo's hyperparams/dqn.yml CartPole-v1 entry (1 env, 5e4 steps): mean return >= 400 over 100
    deterministic episodes on the median of three seeds. One seed is not a test of it: DQN with these settings
    collapses late on some seeds (measured 2026-12-07, seeds 0-4: 31 / 500 / 500 / 500 / 138 with the fused Adam step
    the agent takes since 2026-12-06, 500 / 500 / 174 / 136 / 500 with the per-tensor one: 3 of 5 either way; later
    that day, through the compiled kernels (agent.fast): 122 / 500 / 500 / 500 / 500, and 500 / 500 / 500 / 189 / 500
    through autograd on the same code, 4 of 5 either way)."""
    means = []
    for seed in range(3):
        torch.manual_seed(seed)
        core = GymVecCore("CartPole-v1", 1)
        agent = make_agent("dqn", core.obs_dim, core.n_actions, None, "cpu", **CARTPOLE)
        t0 = time.perf_counter()
        drive(agent, core, CARTPOLE["total_steps"], seed=seed)
        wall = time.perf_counter() - t0
        returns = evaluate(agent, GymVecCore("CartPole-v1", 10), 100)
        print(f"dqn seed {seed}: {CARTPOLE['total_steps']} env steps in {wall:.1f} s, mean evaluation return "
              f"{returns.mean():.1f}")
        assert len(returns) == 100
        means.append(float(returns.mean()))
    assert sorted(means)[1] >= 400, means
