"""Meta-RL sanity tasks (Bernoulli bandits, random tabular MDPs): the batched env contract, the RL^2
observation, seeding, and the reference numbers of Duan et al. 2016 (docs/reference.md §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from dreamalloc.metatasks.baselines import (
    PSRL,
    UCB1,
    BanditOracle,
    BayesBandit,
    MDPOracle,
    RandomPolicy,
    Thompson,
    bayes_regret,
    evaluate_trials,
    finite_horizon_q,
    tuned_ucb1,
)
from dreamalloc.metatasks.env import BanditCore, TabularMDPCore, split_obs
from dreamalloc.report.stats import mean_ci

K, H = 3, 4  # episodes per trial and steps per episode of the small MDP used for the contract


def small_mdp(B=5, **kw):
    return TabularMDPCore(B, states=6, actions=3, horizon=H, episodes=K, **kw)


def play(core, steps, seed=0, action_seed=1):
    """Random actions for ``steps`` steps after ``reset(seed)``; one record per step."""
    obs, info = core.reset(seed=seed)
    g = torch.Generator().manual_seed(action_seed)
    recs = []
    for _ in range(steps):
        a = torch.randint(0, core.n_actions, (core.B,), generator=g)
        nobs, r, term, trunc, ninfo = core.step(a)
        state = core.state.clone() if isinstance(core, TabularMDPCore) else None  # after the step (and reset)
        recs.append(dict(obs=obs, info=info, a=a, r=r, term=term, trunc=trunc, next_obs=nobs, next_info=ninfo,
                         state=state))
        obs, info = nobs, ninfo
    return recs


# ---------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("make, match", [
    (lambda: BanditCore(0), "num_envs must be an integer >= 1"),
    (lambda: BanditCore(2, arms=1), "arms must be an integer >= 2"),
    (lambda: BanditCore(2, arms=2.5), "arms must be an integer >= 2"),
    (lambda: BanditCore(2, arms=True), "arms must be an integer >= 2"),
    (lambda: BanditCore(2, pulls=0), "pulls must be an integer >= 1"),
    (lambda: TabularMDPCore(2, states=0), "states must be an integer >= 1"),
    (lambda: TabularMDPCore(2, actions=1), "actions must be an integer >= 2"),
    (lambda: TabularMDPCore(2, horizon=0), "horizon must be an integer >= 1"),
    (lambda: TabularMDPCore(2, episodes=0), "episodes must be an integer >= 1"),
    (lambda: BanditCore(3).reset(seed=[1, 2]), "seed must be one int or one per env"),
])
def test_invalid_parameters_stop_with_one_clear_message(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_attributes_shapes_and_dtypes():
    bandit, mdp = BanditCore(4, arms=5, pulls=10), TabularMDPCore(3, states=10, actions=5, horizon=10, episodes=7)
    assert (bandit.B, bandit.n_actions, bandit.obs_dim, bandit.trial_length()) == (4, 5, 5 + 2, 10)
    assert (mdp.B, mdp.n_actions, mdp.obs_dim, mdp.trial_length()) == (3, 5, 10 + 5 + 2, 70)
    assert bandit.device == mdp.device == torch.device("cpu")
    for core in (bandit, mdp):
        obs, info = core.reset(seed=0)
        assert obs.shape == (core.B, core.obs_dim) and obs.dtype == torch.float32
        assert info["trial_start"].all() and info["episode_start"].all() and not info["trial_end"].any()
        obs, r, term, trunc, info = core.step(torch.zeros(core.B, dtype=torch.long))
        assert obs.shape == (core.B, core.obs_dim) and obs.dtype == torch.float32
        assert r.shape == (core.B,) and r.dtype == torch.float64
        for flag in (term, trunc, info["trial_start"], info["trial_end"], info["episode_start"]):
            assert flag.shape == (core.B,) and flag.dtype == torch.bool


def test_flags_mark_episode_and_trial_ends_with_same_step_autoreset():
    core = small_mdp()
    recs = play(core, 3 * K * H + 2)
    ep_sum = torch.zeros(core.B, dtype=torch.float64)
    trial_sum = torch.zeros(core.B, dtype=torch.float64)
    for i, rec in enumerate(recs, start=1):
        done = torch.full((core.B,), i % H == 0)
        closes = torch.full((core.B,), i % (K * H) == 0)
        ni = rec["next_info"]
        assert torch.equal(rec["term"], done) and not rec["trunc"].any()  # fixed horizons end by termination
        assert torch.equal(ni["trial_end"], closes) and torch.equal(ni["trial_start"], closes)
        assert torch.equal(ni["episode_start"], done)
        ep_sum += rec["r"]
        trial_sum += rec["r"]
        assert ("final_obs" in ni) == bool(done.any()) and ("episode" in ni) == bool(done.any())
        if done.any():
            assert torch.equal(ni["_final_obs"], done) and torch.equal(ni["_episode"], done)
            assert ni["final_obs"].shape == (core.B, core.obs_dim)
            assert torch.allclose(ni["episode"]["r"], ep_sum) and bool((ni["episode"]["l"] == H).all())
            ep_sum.zero_()
        assert ("trial" in ni) == bool(closes.any())
        if closes.any():
            assert torch.equal(ni["_trial"], closes)
            assert torch.allclose(ni["trial"]["r"], trial_sum) and bool((ni["trial"]["l"] == K * H).all())
            trial_sum.zero_()
    bandit = BanditCore(2, arms=3, pulls=4)
    for i, rec in enumerate(play(bandit, 9), start=1):
        assert torch.equal(rec["next_info"]["trial_end"], torch.full((2,), i % 4 == 0))
        assert torch.equal(rec["term"], rec["next_info"]["trial_end"])


def test_observation_holds_state_previous_action_reward_and_episode_flag():
    core = small_mdp()
    recs = play(core, 2 * K * H + 3)
    first_state, onehot0, r0, flag0 = split_obs(core, recs[0]["obs"])
    assert float(onehot0.abs().sum()) == 0 and float(r0.abs().sum()) == 0 and bool((flag0 == 1).all())
    assert bool((first_state.argmax(1) == 0).all())  # every episode starts in state 0
    for rec in recs:
        ni, a, r = rec["next_info"], rec["a"], rec["r"]
        state, onehot, prev_r, flag = split_obs(core, rec["next_obs"])
        want = torch.nn.functional.one_hot(a, core.n_actions).float()
        cont = ~ni["trial_start"]
        assert torch.equal(onehot[cont], want[cont])  # kept across episode ends inside a trial
        assert torch.equal(prev_r[cont], r[cont].float())
        assert float(onehot[~cont].abs().sum()) == 0 and float(prev_r[~cont].abs().sum()) == 0
        assert torch.equal(flag, ni["episode_start"].float())
        assert torch.equal(state.sum(1), torch.ones(core.B)) and torch.equal(state.argmax(1), rec["state"])
        assert bool((rec["state"][ni["episode_start"]] == 0).all())
        if "final_obs" in ni:  # the pre-reset obs: where the step went, what was done, no flag
            d = ni["_final_obs"]
            fs, fa, fr, ff = split_obs(core, ni["final_obs"])
            assert torch.equal(fa[d], want[d]) and torch.equal(fr[d], r[d].float()) and bool((ff[d] == 0).all())
            assert torch.equal(fs[d].sum(1), torch.ones(int(d.sum())))
    bandit = BanditCore(3, arms=4, pulls=5)
    assert bandit.obs_dim == 4 + 2  # no task part
    for rec in play(bandit, 12):
        _, onehot, prev_r, flag = split_obs(bandit, rec["next_obs"])
        cont = ~rec["next_info"]["trial_start"]
        assert torch.equal(onehot[cont], torch.nn.functional.one_hot(rec["a"], 4).float()[cont])
        assert torch.equal(prev_r[cont], rec["r"][cont].float()) and bool((flag[cont] == 0).all())
        assert bool((flag[~cont] == 1).all()) and float(onehot[~cont].abs().sum()) == 0


def test_final_obs_shows_the_state_reached_and_the_reset_obs_state_zero():
    core = small_mdp(B=2)
    core.reset(seed=3)
    core.cdf.copy_(torch.ones_like(core.cdf))
    core.cdf[..., :4] = 0.0  # the cdf jumps from 0 to 1 at state 4: every transition goes there
    a = torch.zeros(2, dtype=torch.long)
    for i in range(1, H + 1):
        obs, _, _, _, info = core.step(a)
        if i < H:
            assert bool((split_obs(core, obs)[0].argmax(1) == 4).all())
    assert bool((split_obs(core, info["final_obs"])[0].argmax(1) == 4).all())
    assert bool((split_obs(core, obs)[0].argmax(1) == 0).all()) and bool((core.state == 0).all())


# ---------------------------------------------------------------------------------------------- seeding
def test_same_seed_and_actions_replay_the_same_trajectory_and_other_seeds_differ():
    for make in (small_mdp, lambda: BanditCore(5, arms=4, pulls=6)):
        a, b, c = play(make(), 30, seed=11), play(make(), 30, seed=11), play(make(), 30, seed=12)
        assert all(torch.equal(x["next_obs"], y["next_obs"]) and torch.equal(x["r"], y["r"])
                   for x, y in zip(a, b, strict=True))
        assert not all(torch.equal(x["r"], y["r"]) for x, y in zip(a, c, strict=True))


def test_row_of_a_batch_equals_a_single_env_seeded_seed_plus_row():
    steps, B = 2 * K * H + 5, 4
    acts = torch.randint(0, 3, (steps, B), generator=torch.Generator().manual_seed(5))

    def run(core, seed, cols):
        obs, _ = core.reset(seed=seed)
        out = [obs]
        for t in range(steps):
            obs, r, _, _, info = core.step(acts[t, cols])
            out += [obs, r[:, None].float(), info.get("final_obs", obs)]
        return torch.cat([o.reshape(o.shape[0], -1) for o in out], 1)

    batch = run(small_mdp(B=B), 7, slice(None))
    for b in range(B):
        assert torch.equal(batch[b: b + 1], run(small_mdp(B=1), 7 + b, slice(b, b + 1)))
    assert torch.equal(batch, run(small_mdp(B=B), [7, 8, 9, 10], slice(None)))  # one seed per row
    bandits = BanditCore(B, arms=3, pulls=7)
    bandits.reset(seed=100)
    one = BanditCore(1, arms=3, pulls=7)
    one.reset(seed=102)
    assert torch.equal(bandits.means[2], one.means[0])


def test_reset_without_a_seed_moves_on_episode_by_episode_to_a_fresh_reproducible_trial():
    def trials(core):
        core.reset(seed=4)
        first = core.reward_mean.clone()
        for _ in range(K - 1):  # the next episodes of the same trial: the same MDP, no trial start
            _, info = core.reset()
            assert torch.equal(core.reward_mean, first) and not info["trial_start"].any()
            assert info["episode_start"].all()
        _, info = core.reset()  # the K-th: a new trial, a new MDP
        assert info["trial_start"].all()
        return first, core.reward_mean.clone()

    f1, s1 = trials(small_mdp())
    f2, s2 = trials(small_mdp())
    assert torch.equal(f1, f2) and torch.equal(s1, s2) and not torch.equal(f1, s1)
    unseeded = [BanditCore(3), BanditCore(3)]
    for core in unseeded:
        core.reset()
    assert not torch.equal(unseeded[0].means, unseeded[1].means)  # fresh entropy without a seed


def test_state_dict_continues_the_trials_exactly():
    core = small_mdp(B=3)
    play(core, 7)
    twin = small_mdp(B=3)
    twin.load_state_dict(core.state_dict())
    a = torch.ones(3, dtype=torch.long)
    for _ in range(2 * K * H):
        o1, r1, _, _, i1 = core.step(a)
        o2, r2, _, _, i2 = twin.step(a)
        assert torch.equal(o1, o2) and torch.equal(r1, r2) and torch.equal(i1["trial_end"], i2["trial_end"])


def test_misuse_is_reported():
    core = BanditCore(2, arms=3)
    with pytest.raises(RuntimeError, match="before reset"):
        core.step(torch.zeros(2, dtype=torch.long))
    core.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        core.step(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="expected 2 actions"):
        core.step(torch.tensor([0]))
    with pytest.raises(ValueError, match="integers"):
        core.step(torch.tensor([0.5, 1.0]))
    core.step(np.array([1, 2], dtype=np.int32))  # numpy integer arrays are fine (floats, even 1.0, are refused)
    with pytest.raises(ValueError, match="integers"):
        core.step(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="acts on a BanditCore"):
        UCB1().start(small_mdp(), 0)
    with pytest.raises(ValueError, match="c must be one value >= 0"):
        UCB1(c=-1.0).start(core, 0)
    with pytest.raises(ValueError, match="trials must be an integer >= 1"):
        evaluate_trials(RandomPolicy(), core, 0)


# ---------------------------------------------------------------------------------------------- distributions
def test_task_and_step_distributions():
    bandit = BanditCore(20_000, arms=2, pulls=3)
    bandit.reset(seed=0)
    p = bandit.means.flatten().numpy()
    assert stats.kstest(p, "uniform").pvalue > 0.01
    a = torch.randint(0, 2, (bandit.B,), generator=torch.Generator().manual_seed(0))
    _, r, *_ = bandit.step(a)
    resid = (r - bandit.means.gather(1, a[:, None]).squeeze(1)).numpy()
    assert abs(resid.mean()) < 4 * resid.std() / math.sqrt(resid.size)

    mdp = TabularMDPCore(5_000, states=4, actions=2, horizon=2, episodes=1)
    mdp.reset(seed=1)
    mu = mdp.reward_mean.flatten().numpy()
    assert stats.kstest(mu, "norm", args=(1.0, 1.0)).pvalue > 0.01  # mu ~ N(1, 1)
    P = mdp.transition
    assert torch.allclose(P.sum(-1), torch.ones(P.shape[:-1], dtype=torch.float64)) and bool((P >= 0).all())
    assert stats.kstest(P[..., 0].flatten().numpy(), "beta", args=(1, 3)).pvalue > 0.01  # Dirichlet(1) marginal
    a = torch.ones(mdp.B, dtype=torch.long)
    _, r, *_ = mdp.step(a)  # from state 0
    noise = (r - mdp.reward_mean[:, 0, 1]).numpy()
    assert abs(noise.mean()) < 0.06 and abs(noise.std() - 1.0) < 0.05  # rewards ~ N(mu, 1)
    hits = torch.nn.functional.one_hot(mdp.state, 4).double() - P[:, 0, 1]  # next state ~ P(. | 0, 1)
    assert bool((hits.mean(0).abs() < 4 * hits.std(0) / math.sqrt(mdp.B)).all())


def test_finite_horizon_q_by_hand():
    # two states, two actions: action 1 pays 0 now and moves to state 1, where everything pays 2
    R = torch.tensor([[[1.0, 0.0], [2.0, 2.0]]], dtype=torch.float64)
    P = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    P[0, 0, 0, 0] = P[0, 0, 1, 1] = P[0, 1, :, 1] = 1.0
    q = finite_horizon_q(R, P, 3)
    assert q[0, 2, 0].tolist() == [1.0, 0.0]  # last step: take the 1 now
    assert q[0, 1, 0].tolist() == [2.0, 2.0]
    assert q[0, 0, 0].tolist() == [3.0, 4.0]  # three steps: move, then 2 + 2


# ---------------------------------------------------------------------------------------------- reference numbers
def agrees_with_paper(x: np.ndarray, paper: float, paper_trials: int = 1000) -> bool:
    """Duan et al.'s numbers are themselves means over ``paper_trials`` instances, rounded to 0.1: compare
    the two means within a 95 % interval of their difference (same per-trial spread) plus the rounding."""
    half = 1.96 * x.std(ddof=1) * math.sqrt(1.0 / x.size + 1.0 / paper_trials) + 0.05
    return abs(float(x.mean()) - paper) <= half


def fmt(x) -> str:
    m, lo, hi = mean_ci(x)
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


@pytest.mark.parametrize("pulls, trials, random_ref, ucb_ref", [(10, 10_000, 5.0, 6.7), (100, 2_000, 49.9, 78.0)])
def test_bandit_reference_numbers(pulls, trials, random_ref, ucb_ref):
    """k = 5 arms. More instances than the paper's 1000 for a tighter estimate; the comparison interval still
    carries the paper's own sampling error."""
    k, seed = 5, 0
    rand = evaluate_trials(RandomPolicy(), BanditCore(trials, k, pulls), trials, seed)
    oracle = evaluate_trials(BanditOracle(), BanditCore(trials, k, pulls), trials, seed)
    ts = evaluate_trials(Thompson(), BanditCore(trials, k, pulls), trials, seed)
    best_c, ucb, per_c = tuned_ucb1(k, pulls, trials, seed)
    plain = evaluate_trials(UCB1(1.0, prior=False), BanditCore(trials, k, pulls), trials, seed)
    print(f"\nbandit n={pulls} k={k} over {trials}: random {fmt(rand)}, TS {fmt(ts)}, UCB1 tuned (c={best_c}) "
          f"{fmt(ucb)}, Auer UCB1 c=1 {fmt(plain)}, oracle {fmt(oracle)}")
    assert agrees_with_paper(rand, random_ref)
    assert agrees_with_paper(ucb, ucb_ref)
    m, lo, hi = mean_ci(oracle)
    assert lo <= pulls * k / (k + 1) <= hi  # E[max of k uniforms] per pull
    assert mean_ci(rand)[2] < mean_ci(ts)[1] and mean_ci(ts)[2] < lo and mean_ci(ucb)[2] < lo
    assert mean_ci(plain)[2] < mean_ci(ucb)[1]  # textbook UCB1 is far worse at these horizons
    assert 0.0 < best_c < 0.5 and per_c[best_c] == pytest.approx(float(ucb.mean()))


def test_bayes_bandit_by_hand_and_on_the_prior():
    """The exact Bayes-optimal policy: hand-worked values (2 arms: one pull 1/2; two pulls 1/2 (1 + 2/3) + 1/2 1/2
    = 13/12), its expected return (6.660 for n = 10, k = 5) matched by what it scores on 20,000 instances drawn
    from the prior and above Thompson's and tuned UCB1's; its own regret 0, and every other policy's summed regret
    its expected shortfall (random: 6.660 - 5 = 1.660; nothing lost on the first pull, where every arm is alike)."""
    def value(arms, pulls):
        b = BayesBandit()
        b.start(BanditCore(1, arms, pulls))
        return b.value()

    assert value(2, 1) == pytest.approx(0.5) and value(2, 2) == pytest.approx(13 / 12)
    bayes = BayesBandit()
    bayes.start(BanditCore(1, 5, 10))
    v = bayes.value()
    assert v == pytest.approx(6.65999, abs=1e-4)
    q = bayes.q(np.array([[1, 0, 0, 0, 0]]), np.array([[1, 1, 0, 0, 0]]))  # arm 0 won, arm 1 lost, 8 pulls left
    assert q[0, 2] == q[0, 3] == q[0, 4] and q.argmax() == 0 and q[0, 1] < q[0, 2]
    n = 20_000
    x = evaluate_trials(BayesBandit(), BanditCore(n, 5, 10), n, seed=0)
    m, lo, hi = mean_ci(x)
    assert lo < v < hi
    assert float(evaluate_trials(Thompson(), BanditCore(n, 5, 10), n, seed=0).mean()) < m - 0.5
    ucb = bayes_regret(UCB1(0.2), BanditCore(n, 5, 10), seed=0).sum()  # tuned UCB1: close to optimal, not optimal
    assert 0.0 < ucb < 0.05 and v - ucb == pytest.approx(evaluate_trials(UCB1(0.2), BanditCore(n, 5, 10), n,
                                                                          seed=0).mean(), abs=0.04)
    assert bayes_regret(BayesBandit(), BanditCore(2000, 5, 10), seed=3).sum() == 0.0
    r = bayes_regret(RandomPolicy(), BanditCore(20_000, 5, 10), seed=3)
    assert r.shape == (10,) and r[0] == 0.0 and (r[1:] > 0).all() and r.sum() == pytest.approx(v - 5.0, abs=0.02)
    with pytest.raises(ValueError, match="up to 20 pulls"):
        BayesBandit().start(BanditCore(1, 5, 100))


def test_tabular_mdp_reference_numbers():
    """10 states, 5 actions, 10 episodes of 10 steps, 1000 fresh MDPs: random 100.1 and PSRL 138.1 (Duan et
    al.); the oracle must clear PSRL and RL^2's 156.2."""
    trials, seed = 1000, 0
    rand = evaluate_trials(RandomPolicy(), TabularMDPCore(trials), trials, seed)
    psrl = evaluate_trials(PSRL(), TabularMDPCore(trials), trials, seed)
    oracle = evaluate_trials(MDPOracle(), TabularMDPCore(trials), trials, seed)
    print(f"\ntabular MDP over {trials}: random {fmt(rand)}, PSRL {fmt(psrl)}, oracle {fmt(oracle)}")
    assert agrees_with_paper(rand, 100.1)
    assert agrees_with_paper(psrl, 138.1)
    assert mean_ci(oracle)[1] > 156.2 > 138.1
    assert float(oracle.mean()) > float(psrl.mean()) + 50


def test_evaluate_trials_takes_agents_and_policies_alike():
    class FirstArm:  # the Agent interface: initial_state / act(obs, state, info, deterministic)
        def initial_state(self, batch):
            return None

        def act(self, obs, state, info, deterministic=False):
            return torch.zeros(obs.shape[0], dtype=torch.long), state

    class FirstArmPolicy(RandomPolicy):
        def act(self, obs, info):
            return torch.zeros(self.core.B, dtype=torch.long)

    x = evaluate_trials(FirstArm(), BanditCore(8, arms=3, pulls=6), 20, seed=3)
    y = evaluate_trials(FirstArmPolicy(), BanditCore(8, arms=3, pulls=6), 20, seed=3)
    assert x.shape == (20,) and x.dtype == np.float64 and np.array_equal(x, y)
    one = evaluate_trials(FirstArm(), BanditCore(1, arms=3, pulls=6), 1, seed=3 + 5)
    assert one[0] == x[5]  # trial b of a batch seeded s is the trial of seed s + b
