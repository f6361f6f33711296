"""The compiled CPU path of PPO / A2C / DQN (dreamalloc/nn/fastmlp.py) against torch autograd: activations,
gradients, optimiser steps and whole updates agree to float32 rounding, and runs that use it keep every contract
of the torch path (checkpoints, masks, NaN guard)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamalloc.agents import make_agent
from dreamalloc.agents.onpolicy import Rollout, _ac_targets
from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.core.driver import Driver, drive, evaluate
from dreamalloc.nn import fastmlp
from dreamalloc.nn.layers import mlp

pytestmark = pytest.mark.skipif(not fastmlp.AVAILABLE, reason="numba is not installed")


def test_tanh_is_correctly_rounded_float32():
    xs = np.concatenate([np.linspace(-12, 12, 400_001), np.logspace(-30, 1, 20_000),
                         -np.logspace(-30, 1, 20_000), [0.0, -0.0, 9.5, -9.5, 40.0]]).astype(np.float32)
    got = xs.copy()
    fastmlp.tanh_(got)
    want = np.tanh(xs.astype(np.float64)).astype(np.float32)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_forward_and_backward_match_autograd(act):
    torch.manual_seed(0)
    net, ref = mlp(37, [16, 8], 5, act), mlp(37, [16, 8], 5, act)
    ref.load_state_dict(net.state_dict())
    flat = fastmlp.FlatMLPs([net])
    x = torch.randn(11, 37)
    out, hs = fastmlp.forward(flat.p, flat.specs[0], flat.act, x.numpy())
    np.testing.assert_allclose(out, ref(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    dy = torch.randn(11, 5)
    fastmlp.backward(flat.p, flat.g, flat.specs[0], flat.act, hs, dy.numpy())
    ref(x).backward(dy)
    want = torch.cat([p.grad.flatten() for p in ref.parameters()]).numpy()
    np.testing.assert_allclose(flat.g, want, rtol=1e-4, atol=1e-6)


def test_parameters_are_views_of_the_flat_buffer_and_other_nets_are_refused():
    net = mlp(4, [3], 2, "relu")
    flat = fastmlp.FlatMLPs([net])
    with torch.no_grad():
        net[0].weight[0, 0] = 7.0
    assert flat.p[0] == 7.0
    assert fastmlp.plain_mlp(mlp(4, [3], 2, "silu")) is None
    assert fastmlp.plain_mlp(mlp(4, [3], 2, "relu", layer_norm=True)) is None
    with pytest.raises(ValueError, match="plain MLP"):
        fastmlp.FlatMLPs([mlp(4, [3], 2, "relu"), mlp(4, [3], 2, "tanh")])


@pytest.mark.parametrize("opt_name", ["adam", "rmsprop"])
def test_optimiser_steps_match_torch(opt_name):
    torch.manual_seed(1)
    net, ref = mlp(6, [5], 3, "tanh"), mlp(6, [5], 3, "tanh")
    ref.load_state_dict(net.state_dict())
    make = (lambda ps: torch.optim.Adam(ps, lr=1e-2, eps=1e-5)) if opt_name == "adam" else (
        lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.99, eps=1e-5))
    opt, ropt = make(list(net.parameters())), make(list(ref.parameters()))
    flat = fastmlp.FlatMLPs([net])
    flat.bind(opt)
    for step in range(5):
        x, dy = torch.randn(9, 6), torch.randn(9, 3) * (1 + 10 * step)
        _, hs = fastmlp.forward(flat.p, flat.specs[0], flat.act, x.numpy())
        fastmlp.backward(flat.p, flat.g, flat.specs[0], flat.act, hs, dy.numpy())
        norm = flat.step(0.5)
        ropt.zero_grad()
        ref(x).backward(dy)
        rnorm = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
        ropt.step()
        assert norm == pytest.approx(float(rnorm), rel=1e-5)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-6)
    # torch's own state is what the kernels wrote: a torch step after them continues the same optimiser
    key = "exp_avg_sq" if opt_name == "adam" else "square_avg"
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(opt.state[p][key].numpy(), ropt.state[q][key].numpy(), rtol=1e-4, atol=1e-9)
        assert float(opt.state[p]["step"]) == float(ropt.state[q]["step"]) == 5


def test_optimisers_the_kernels_do_not_step_are_refused():
    net = mlp(3, [4], 2, "relu")
    flat = fastmlp.FlatMLPs([net])
    for opt, what in ((torch.optim.Adam(net.parameters(), amsgrad=True), "amsgrad"),
                      (torch.optim.RMSprop(net.parameters(), momentum=0.9), "momentum"),
                      (torch.optim.SGD(net.parameters(), lr=0.1), "Adam or RMSprop")):
        with pytest.raises(ValueError, match=what):
            flat.bind(opt)
    with pytest.raises(ValueError, match="exactly these"):
        flat.bind(torch.optim.Adam(list(net.parameters())[:1]))


def test_a_nan_gradient_changes_nothing():
    net = mlp(3, [4], 2, "relu")
    opt = torch.optim.Adam(list(net.parameters()), lr=0.1)
    flat = fastmlp.FlatMLPs([net])
    flat.bind(opt)
    before = flat.p.copy()
    flat.g[:] = 1.0
    flat.g[3] = np.nan
    assert not np.isfinite(flat.step(1.0))
    np.testing.assert_array_equal(flat.p, before)
    assert float(opt.state[net[0].weight]["step"]) == 0


def _agents(algo, cfg, B, **hp):
    core = AllocCore(B, cfg)
    out = []
    for fast in (False, True):
        torch.manual_seed(3)
        out.append(make_agent(algo, core.obs_dim, core.n_actions, cfg, "cpu", fast=fast, total_steps=10_000, **hp))
    assert out[0].fast is None and out[1].fast is not None
    return core, out


def _fill(agent, core, seed=0):
    """Drive ``agent`` until its rollout is full (no update)."""
    d = Driver(core, agent)
    d.reset(seed)
    while agent.rollout is None or not agent.rollout.full:
        d.step()


CASES = {  # (algo, env action space, hyperparameters)
    "ppo": ("ppo", "heuristic", dict(n_steps=16, batch_size=32, ent_coef=0.01)),
    "ppo_masked_clipvf": ("ppo", "hole", dict(n_steps=16, batch_size=24, ent_coef=0.05, clip_vf=0.2,
                                               activation="relu", hidden=[32, 16])),
    "ppo_kl_early_stop": ("ppo", "heuristic", dict(n_steps=16, batch_size=16, n_epochs=6, target_kl=3e-3,
                                                    lr=3e-3, anneal_clip=True)),
    "a2c": ("a2c", "heuristic", dict(ent_coef=0.01)),
    "a2c_masked_normadv": ("a2c", "hole", dict(normalize_advantage=True, optimizer="adam")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_actor_critic_update_matches_autograd(case):
    """The same rollout learnt both ways: losses, statistics and every parameter after the update agree."""
    algo, action, hp = CASES[case]
    cfg = AllocConfig(cells=64, stream="mixed", action=action).validate()
    core, (slow, fast) = _agents(algo, cfg, 4, **hp)
    _fill(slow, core)
    fast.rollout = Rollout.like(slow.rollout.state_dict(), "cpu")  # the same samples and (same generator
    # state) the same minibatch order
    fast._pending = None
    fast.gen.set_state(slow.gen.get_state())
    ms, mf = slow.update(10 * 4), fast.update(10 * 4)
    if "target_kl" in hp:  # the KL check stops both at the same minibatch
        assert ms["early_stop"] == mf["early_stop"] == 1.0 and ms["minibatches"] == mf["minibatches"] > 1
    for k, v in ms.items():
        assert mf[k] == pytest.approx(v, rel=2e-3, abs=1e-5), k
    for p, q in zip(slow.net.parameters(), fast.net.parameters(), strict=True):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-3, atol=2e-5)
    for p, q in zip(slow.net.parameters(), fast.net.parameters(), strict=True):
        a, b = slow.opt.state[p], fast.opt.state[q]
        assert float(a["step"]) == float(b["step"]) > 0


@pytest.mark.parametrize("lam", [0.95, 1.0])
def test_compiled_targets_match_the_torch_recursion(lam):
    """GAE / n-step returns with terminations, truncations (bootstrapped from ``boot``) and a cut at T - 1."""
    g = torch.Generator().manual_seed(4)
    ro = Rollout(7, 5, 3, 2, "cpu", masked=False)
    ro.rewards.copy_(torch.randn(7, 5, generator=g))
    ro.values.copy_(torch.randn(7, 5, generator=g))
    ro.boot.copy_(torch.randn(7, 5, generator=g))
    ro.ended.copy_(torch.rand(7, 5, generator=g) < 0.3)
    ro.terminated.copy_(ro.ended & (torch.rand(7, 5, generator=g) < 0.5))
    assert bool((ro.ended & ~ro.terminated).any()) and bool(ro.terminated.any())
    agent = make_agent("a2c", 3, 2, None, "cpu", gamma=0.9, gae_lambda=lam, fast=False)
    want = agent._targets(ro)
    got = _ac_targets(ro.rewards.numpy(), ro.values.numpy(), ro.boot.numpy(), ro.terminated.numpy(),
                      ro.ended.numpy(), 0.9, lam)
    for w, x in zip(want, got, strict=True):
        np.testing.assert_allclose(x, w.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("action", ["heuristic", "hole"])
def test_actor_critic_acting_matches_torch(action):
    """Sampled actions, log-probabilities and values of ``act`` (and the greedy action) are the torch path's."""
    cfg = AllocConfig(cells=64, stream="mixed", action=action).validate()
    core, (slow, fast) = _agents("ppo", cfg, 8)
    obs, info = core.reset(seed=5)
    for deterministic in (False, True):
        fast.gen.set_state(slow.gen.get_state())
        a1, _ = slow.act(obs, None, info, deterministic)
        a2, _ = fast.act(obs, None, info, deterministic)
        assert torch.equal(a1, a2)
        if not deterministic:
            for x, y in zip(slow._pending[1:3], fast._pending[1:3], strict=True):
                torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("action", ["heuristic", "hole"])
def test_dqn_run_matches_autograd(action):
    """A short DQN run both ways: same episodes, parameters within float32 rounding."""
    cfg = AllocConfig(cells=64, stream="mixed", action=action).validate()
    runs = []
    for fast in (False, True):
        torch.manual_seed(0)
        core = AllocCore(8, cfg)
        agent = make_agent("dqn", core.obs_dim, core.n_actions, cfg, "cpu", fast=fast, total_steps=4_000,
                           learning_starts=200, train_freq=1, double_q=action == "hole")
        assert (agent.fast is not None) == fast
        runs.append((drive(agent, core, 4_000, seed=1), agent))
    (r0, a0), (r1, a1) = runs
    assert a0.n_updates == a1.n_updates > 400
    assert r0 == pytest.approx(r1, rel=1e-4)
    for p, q in zip(a0.q.parameters(), a1.q.parameters(), strict=True):
        # Adam divides by sqrt(v): float32 rounding in near-zero gradients moves weights by up to ~lr per step
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-3, atol=3e-4)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_checkpoints_cross_between_the_paths(algo):
    """A state saved by the compiled path loads into the torch path (and back) and both continue identically
    to float32 rounding: the flat buffers are torch's own parameters and optimiser state."""
    cfg = AllocConfig(cells=64, stream="mixed", action="heuristic").validate()
    core, (slow, fast) = _agents(algo, cfg, 4, **({"n_steps": 8} if algo == "ppo" else {}))
    drive(fast, core, 600, seed=2)
    state = fast.state_dict()
    slow.load_state_dict(state)
    fast2 = make_agent(algo, core.obs_dim, core.n_actions, cfg, "cpu", fast=True, total_steps=10_000,
                       **({"n_steps": 8} if algo == "ppo" else {}))
    fast2.load_state_dict(slow.state_dict())
    r = [evaluate(a, AllocCore(4, cfg), 4) for a in (fast, slow, fast2)]
    np.testing.assert_allclose(r[1], r[0], rtol=1e-5)
    np.testing.assert_allclose(r[2], r[0], rtol=1e-5)
    for agent in (slow, fast2):  # both keep learning from the same state to the same place
        drive(agent, AllocCore(4, cfg), 200, seed=3)
    p_slow = torch.cat([p.detach().flatten() for p in (slow.q if algo == "dqn" else slow.net).parameters()])
    p_fast = torch.cat([p.detach().flatten() for p in (fast2.q if algo == "dqn" else fast2.net).parameters()])
    torch.testing.assert_close(p_fast, p_slow, rtol=1e-3, atol=1e-5)


def test_nets_the_kernels_do_not_cover_stay_on_torch():
    cfg = AllocConfig(cells=64, stream="mixed", action="hole", hole_features=8).validate()
    core = AllocCore(2, cfg)
    kw = dict(total_steps=1000)
    assert make_agent("ppo", core.obs_dim, core.n_actions, cfg, "cpu", shared=True, **kw).fast is None
    assert make_agent("ppo", core.obs_dim, core.n_actions, cfg, "cpu", activation="silu", **kw).fast is None
    assert make_agent("ppo", core.obs_dim, core.n_actions, cfg, "cpu", pointer=8, **kw).fast is None
    assert make_agent("dqn", core.obs_dim, core.n_actions, cfg, "cpu", activation="elu", **kw).fast is None
    meta = AllocConfig(cells=64, stream="mixed", action="heuristic", meta_obs=True).validate()
    core = AllocCore(2, meta)
    assert make_agent("rl2_ppo", core.obs_dim, core.n_actions, meta, "cpu", **kw).fast is None
