"""The pointer policy head (``nn.layers.PointerHead``, ``agent.pointer`` of RL^2-PPO) and the env contract it
reads (``EnvSpec.action_features``): which part of the observation describes each action."""

from __future__ import annotations

import pytest
import torch

from dreamalloc.agents import make_agent
from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.driver import evaluate
from dreamalloc.experiment.checkpoint import load_checkpoint, save_checkpoint
from dreamalloc.nn.layers import PointerHead

pytestmark = pytest.mark.usefixtures("single_thread")

HOLE = dict(cells=128, stream="random", action="hole", holes=6, hole_features=6, hole_order="size", bitmap=False,
            summary=True, meta_obs=True, trial_episodes=2)
TINY = dict(n_steps=12, bptt=3, batch_size=24, n_epochs=2, hidden=[16], rnn_hidden=8, pointer=16)


def test_alloc_spec_points_at_each_hole_features():
    """In the hole space with a feature pair per hole action, the spec's (offset, width) reads hole k's (start,
    length) / N out of the observation, in the order of the actions; elsewhere the spec has none."""
    core = AllocCore(5, AllocConfig(**HOLE).validate())
    offset, width = core.spec.action_features
    assert width == 2 and offset == 1 + 4  # request, then the 4 summary values
    obs, info = core.reset(seed=2)
    for _ in range(12):
        start, length = core.runs.first_fitting(core.request, 6, by_size=True)
        feats = obs[:, offset: offset + 6 * width].reshape(5, 6, 2)
        assert torch.allclose(feats[..., 0], start.float() / 128)
        assert torch.allclose(feats[..., 1], length.float() / 128)
        assert torch.equal(info["action_mask"], length > 0)  # a listed hole is exactly a valid action
        obs, _, _, _, info = core.step(torch.zeros(5, dtype=torch.long))
    for other in (dict(HOLE, hole_features=5), dict(HOLE, action="heuristic"), dict(HOLE, action="address")):
        assert AllocCore(2, AllocConfig(**other).validate()).spec.action_features == ()


def test_pointer_head_is_equivariant_and_rescales_over_valid_actions():
    torch.manual_seed(0)
    head = PointerHead(8, 5, offset=3, width=2, units=16)
    h, obs = torch.randn(4, 8), torch.randn(4, 3 + 10)
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = obs.clone()
    permuted[:, 3:].view(4, 5, 2).copy_(obs[:, 3:].view(4, 5, 2)[:, perm])
    with torch.no_grad():  # positions start at zero: permuting the actions' features permutes their logits
        assert torch.allclose(head(h, permuted), head(h, obs)[:, perm], atol=1e-6)
    mask = torch.tensor([[True, False, True, True, False]] * 4)
    g = head.features(obs, mask)[..., 2:]
    valid = g[mask]
    assert float(valid.min()) == 0.0 and float(valid.max()) == 1.0
    assert torch.allclose(g[:, [0, 2, 3]].amin(1), torch.zeros(4, 2)) and torch.allclose(
        g[:, [0, 2, 3]].amax(1), torch.ones(4, 2))  # min and max over the valid actions only
    flat = head.features(torch.zeros(1, 13), None)[..., 2:]
    assert torch.equal(flat, torch.full_like(flat, 0.5))  # equal features: the middle, no division by zero


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_pointer_head_learns_to_point_at_an_extreme_of_tiny_features(which):
    """Pick the action whose feature is the largest (smallest) when the features differ by a thousandth (a
    hole's length / 4,096): the pointer head learns it in a few hundred steps from the rescaled features,
    where the gap is 1 whatever the scale."""
    torch.manual_seed(0)
    head = PointerHead(4, 8, offset=0, width=1, units=16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    h = torch.zeros(256, 4)

    def batch():
        x = torch.rand(256, 8) * 8e-3
        return x, (x.argmax(1) if which == "largest" else x.argmin(1))

    for _ in range(300):
        x, y = batch()
        loss = torch.nn.functional.cross_entropy(head(h, x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch()
    with torch.no_grad():
        assert float((head(h, x).argmax(1) == y).float().mean()) > 0.95


def _train_valid_only(agent, core, steps: int, seed: int):
    """``steps`` steps of the training cycle on ``core``, asserting every sampled hole is a valid one; returns
    where it stopped (obs, info, recurrent state)."""
    obs, info = core.reset(seed=seed)
    state = agent.initial_state(core.B)
    for step in range(steps):
        action, state = agent.act(obs, state, info)
        assert bool(info["action_mask"].gather(1, action[:, None]).all())
        next_obs, r, te, tr, info2 = core.step(action)
        agent.observe(obs, action, r, te, tr, info2.get("final_obs", next_obs), info2)
        obs, info = next_obs, info2
        agent.update((step + 1) * core.B)
    return obs, info, state


def test_rl2_ppo_with_pointer_trains_acts_exports_and_resumes(tmp_path):
    """The pointer head in RL^2-PPO on the hole space: learning updates run, no invalid hole is ever chosen,
    the exported acting step takes the eager greedy actions, and a checkpoint restores the same policy."""
    cfg = AllocConfig(**HOLE).validate()
    core = AllocCore(8, cfg)
    torch.manual_seed(0)
    agent = make_agent("rl2_ppo", cfg.obs_dim, cfg.n_actions, core.spec, "cpu", **TINY)
    assert type(agent.net.pi).__name__ == "PointerHead"
    obs, info, state = _train_valid_only(agent, core, 60, seed=1)
    assert agent.n_updates >= 4
    greedy, _ = agent.act(obs, state, info, deterministic=True)
    step_mod = agent.acting_step(masked=True)
    with torch.no_grad():
        for b in range(8):
            a, _ = step_mod.module(obs[b: b + 1], state[b: b + 1], info["trial_start"][b: b + 1],
                                   info["action_mask"][b: b + 1])
            assert int(a) == int(greedy[b])
    path = save_checkpoint(tmp_path / "p.safetensors", agent.state_dict())
    other = make_agent("rl2_ppo", cfg.obs_dim, cfg.n_actions, core.spec, "cpu", **TINY)
    other.load_state_dict(load_checkpoint(path))
    ret = [evaluate(a, AllocCore(4, cfg), episodes=4, seed=9) for a in (agent, other)]
    assert ret[0].tolist() == ret[1].tolist()


def test_pointer_needs_features_per_action():
    cfg = AllocConfig(**dict(HOLE, action="heuristic")).validate()
    core = AllocCore(2, cfg)
    with pytest.raises(ValueError, match="pointer > 0 needs an env whose observation holds features for each"):
        make_agent("rl2_ppo", cfg.obs_dim, cfg.n_actions, core.spec, "cpu", **TINY)
    with pytest.raises(ValueError, match="pointer must be >= 0"):
        make_agent("rl2_ppo", cfg.obs_dim, cfg.n_actions, core.spec, "cpu", **dict(TINY, pointer=-1))


@pytest.mark.parametrize("agent_name, shared", [("ppo", False), ("ppo", True), ("a2c", False)])
def test_feed_forward_agents_take_the_pointer_head(agent_name, shared):
    """PPO / A2C with the pointer head on the hole space: updates run, only valid holes are chosen, and the
    export's greedy actions are the eager ones."""
    cfg = AllocConfig(**dict(HOLE, meta_obs=False, trial_episodes=1)).validate()
    core = AllocCore(8, cfg)
    torch.manual_seed(0)
    agent = make_agent(agent_name, cfg.obs_dim, cfg.n_actions, core.spec, "cpu", n_steps=8, hidden=[16],
                       shared=shared, pointer=16)
    assert agent.net.pointer is not None
    obs, info, _ = _train_valid_only(agent, core, 40, seed=4)
    assert agent.n_updates >= 4
    greedy, _ = agent.act(obs, None, info, deterministic=True)
    mod = agent.acting_step(masked=True).module
    with torch.no_grad():
        assert torch.equal(mod(obs, info["action_mask"])[0], greedy)
