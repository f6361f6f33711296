"""Reference policies for the meta-RL sanity tasks, and the trial evaluation that measures them.

They bracket what an RL^2 agent should reach on ``BanditCore`` / ``TabularMDPCore`` (Duan et al. 2016,
docs/reference.md §6): random from below, the per-trial oracles (which know the arm means / the MDP) from above,
and the classic adaptive algorithms in between. The adaptive ones learn only from the RL^2 observation
(previous action, previous reward, state, flags), as an agent must, so they also check that the
observation carries what adaptation needs. Each keeps one row of statistics per env, reset where
``info["trial_start"]`` is set; their own randomness comes from a numpy Generator seeded in ``start``.

UCB1 follows RL^2's baseline code (rllab sandbox ``neural_learner`` bandit evaluation), not textbook UCB1:
pseudo-counts of one success in two pulls per arm (a Beta(1, 1) prior), index
``k_i / m_i + c sqrt(2 log t / m_i)`` with t the pulls made so far in the trial, and c tuned over
{0, 0.1, ..., 1} on the same 1000 instances, the best mean reported. ``tuned_ucb1`` reproduces that sweep;
``UCB1(prior=False)`` is Auer et al.'s original (each arm once, then the index with empirical means).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from dreamalloc.metatasks.env import BanditCore, TabularMDPCore, split_obs


class TrialPolicy(ABC):
    """A non-learning policy over a batched meta task: ``start(core, seed)`` once, then ``act(obs, info)``
    after every reset / step with what it returned."""

    needs: type = object

    def start(self, core, seed: int = 0) -> None:
        if not isinstance(core, self.needs):
            raise ValueError(f"{type(self).__name__} acts on a {self.needs.__name__}, got {type(core).__name__}")
        self.core = core
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def act(self, obs: torch.Tensor, info: dict) -> torch.Tensor:
        """Actions [B] for the core's current step."""

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.long, device=self.core.device)


class RandomPolicy(TrialPolicy):
    """Uniform over the actions: the floor (reward = the task's mean reward)."""

    def act(self, obs, info):
        return self._tensor(self.rng.integers(0, self.core.n_actions, self.core.B))


# ---------------------------------------------------------------------------------------------- bandits
class _BanditPolicy(TrialPolicy):
    needs = BanditCore

    def start(self, core, seed=0):
        super().start(core, seed)
        self.succ = torch.zeros((core.B, core.n_actions), dtype=torch.float64, device=core.device)
        self.pulls = torch.zeros_like(self.succ)

    def _update(self, obs, info) -> None:
        """Count the outcome the obs reports (none at trial start: the previous action part is zero there)."""
        fresh = info["trial_start"]
        self.succ[fresh] = 0.0
        self.pulls[fresh] = 0.0
        _, onehot, reward, _ = split_obs(self.core, obs)
        self.succ += onehot.double() * reward.double()[:, None]
        self.pulls += onehot.double()


class UCB1(_BanditPolicy):
    """UCB1 with exploration constant ``c`` (a float, or one per env row for sweeps); ``prior=True`` is
    RL^2's variant (see the module docstring), ``prior=False`` Auer et al.'s. Ties go to the lowest arm."""

    def __init__(self, c=1.0, prior: bool = True):
        self.c, self.prior = c, prior

    def start(self, core, seed=0):
        super().start(core, seed)
        c = torch.as_tensor(self.c, dtype=torch.float64, device=core.device).reshape(-1)
        if c.numel() not in (1, core.B) or bool((c < 0).any()):
            raise ValueError(f"UCB1: c must be one value >= 0 or one per env ({core.B}), got {c.numel()} values")
        self._c = c[:, None]

    def act(self, obs, info):
        self._update(obs, info)
        log_t = torch.log(self.pulls.sum(1, keepdim=True).clamp(min=1.0))  # log t, 0 before the 2nd pull
        if self.prior:
            m = self.pulls + 2.0
            index = (self.succ + 1.0) / m + self._c * torch.sqrt(2.0 * log_t / m)
        else:
            m = self.pulls.clamp(min=1.0)
            index = self.succ / m + self._c * torch.sqrt(2.0 * log_t / m)
            index = torch.where(self.pulls == 0, torch.inf, index)
        return index.argmax(1)


class Thompson(_BanditPolicy):
    """Thompson sampling with Beta(1, 1) priors: the Bayes-flavoured reference (Gittins without its tables)."""

    def act(self, obs, info):
        self._update(obs, info)
        s, n = self.succ.cpu().numpy(), self.pulls.cpu().numpy()
        return self._tensor(self.rng.beta(1.0 + s, 1.0 + n - s).argmax(1))


class BanditOracle(_BanditPolicy):
    """Pulls the best arm of the current instance every time: expected total = pulls x E[max of the means]
    = pulls x arms / (arms + 1)."""

    def act(self, obs, info):
        return self.core.means.argmax(1)


class BayesBandit(_BanditPolicy):
    """The Bayes-optimal policy for ``BanditCore``'s prior (every arm's mean uniform on [0, 1], i.e. Beta(1, 1)):
    exact finite-horizon dynamic programming over the posteriors, a state being each arm's (successes, failures);
    ties go to the lowest arm. ``value()`` is its expected trial return over the prior (6.660 for 5 arms and 10
    pulls: the most any policy can expect, where the oracle knows the means) and ``q(succ, pulls)`` the optimal
    action values of posterior rows. Exact, so only for short trials (pulls <= MAX_PULLS)."""

    MAX_PULLS = 20

    def start(self, core, seed=0):
        super().start(core, seed)
        if core.pulls > self.MAX_PULLS:
            raise ValueError(f"BayesBandit: exact dynamic programming covers trials of up to {self.MAX_PULLS} pulls, "
                             f"got {core.pulls}; use Thompson or UCB1 for longer ones")
        self.arms, self.horizon = core.arms, core.pulls
        self._memo: dict[tuple, tuple[float, ...]] = {}

    def _qs(self, state: tuple) -> tuple[float, ...]:
        """Optimal action values of a posterior ``state`` (sorted (successes, failures) per arm, so arms with
        the same counts share an entry), in that sorted order."""
        got = self._memo.get(state)
        if got is None:
            left = self.horizon - sum(a + b for a, b in state)
            got = tuple(0.0 for _ in state)
            if left > 0:
                out = []
                for i, (a, b) in enumerate(state):
                    p = (a + 1.0) / (a + b + 2.0)
                    win = state[:i] + ((a + 1, b),) + state[i + 1:]
                    lose = state[:i] + ((a, b + 1),) + state[i + 1:]
                    v_win, v_lose = max(self._qs(tuple(sorted(win)))), max(self._qs(tuple(sorted(lose))))
                    out.append(p * (1.0 + v_win) + (1.0 - p) * v_lose)
                got = tuple(out)
            self._memo[state] = got
        return got

    def q(self, succ: np.ndarray, pulls: np.ndarray) -> np.ndarray:
        """Optimal action values [R, arms] of posterior rows (successes and pulls per arm, [R, arms] integers)."""
        out = np.zeros(np.shape(succ), dtype=np.float64)
        for r, (s_row, n_row) in enumerate(zip(np.asarray(succ, int), np.asarray(pulls, int), strict=True)):
            counts = [(int(s), int(n - s)) for s, n in zip(s_row, n_row, strict=True)]
            order = sorted(range(self.arms), key=lambda i: counts[i])
            for q, i in zip(self._qs(tuple(counts[i] for i in order)), order, strict=True):
                out[r, i] = q
        return out

    def value(self) -> float:
        return max(self._qs(tuple((0, 0) for _ in range(self.arms))))

    def act(self, obs, info):
        self._update(obs, info)
        return self._tensor(self.q(self.succ.cpu().numpy(), self.pulls.cpu().numpy()).argmax(1))


def bayes_regret(policy, core: BanditCore, seed=0, deterministic: bool = True) -> np.ndarray:
    """Expected regret of ``policy`` (an agent or a TrialPolicy) against the Bayes-optimal one, per pull: the mean
    over the core's B rows of max_a Q*(s_t, a) - Q*(s_t, a_t) along one trial of each row from ``core.reset(seed)``,
    [pulls]. By the performance-difference lemma its sum is the policy's expected shortfall from ``BayesBandit.value``
    over the prior, an estimate free of the outcome noise in the observed return (the states visited still vary)."""
    bayes = BayesBandit()
    bayes.start(core)
    obs, info = core.reset(seed=seed)
    act = _acting(policy, core, seed, deterministic)
    out = np.zeros(core.pulls)
    with torch.no_grad():
        for t in range(core.pulls):
            bayes._update(obs, info)
            q = bayes.q(bayes.succ.cpu().numpy(), bayes.pulls.cpu().numpy())
            action = act(obs, info)
            a = np.asarray(action.cpu()).reshape(-1)
            out[t] = float((q.max(1) - q[np.arange(core.B), a]).mean())
            obs, _, _, _, info = core.step(action)
    return out


def tuned_ucb1(arms: int, pulls: int, trials: int = 1000, seed: int = 0, cs=None, prior: bool = True,
               device="cpu") -> tuple[float, np.ndarray, dict[float, float]]:
    """RL^2's UCB1 baseline: every c of ``cs`` (default 0, 0.1, ..., 1) on the same ``trials`` instances
    (seeds seed .. seed + trials - 1), in one batch. Returns (best c, its per-trial totals, mean per c)."""
    cs = [round(0.1 * i, 1) for i in range(11)] if cs is None else [float(c) for c in cs]
    core = BanditCore(len(cs) * trials, arms=arms, pulls=pulls, device=device)
    seeds = np.tile(np.arange(seed, seed + trials), len(cs))
    per_row_c = np.repeat(cs, trials)
    totals = evaluate_trials(UCB1(per_row_c, prior=prior), core, core.B, seed=seeds).reshape(len(cs), trials)
    means = {c: float(m) for c, m in zip(cs, totals.mean(1), strict=True)}
    best = int(totals.mean(1).argmax())
    return cs[best], totals[best], means


# ---------------------------------------------------------------------------------------------- MDPs
def finite_horizon_q(reward: torch.Tensor, transition: torch.Tensor, horizon: int) -> torch.Tensor:
    """Optimal Q [n, H, S, A] of MDPs (reward [n, S, A], transition [n, S, A, S]) over a horizon: Q[:, h] is
    the value of acting at step h of the episode (H - h steps to go), by backward induction."""
    n, S, A = reward.shape
    q = torch.empty((n, horizon, S, A), dtype=reward.dtype, device=reward.device)
    v = torch.zeros((n, S), dtype=reward.dtype, device=reward.device)
    for h in range(horizon - 1, -1, -1):
        q[:, h] = reward + torch.einsum("nsat,nt->nsa", transition, v)
        v = q[:, h].amax(-1)
    return q


class _MDPPolicy(TrialPolicy):
    needs = TabularMDPCore

    def start(self, core, seed=0):
        super().start(core, seed)
        self.q = torch.zeros((core.B, core.horizon, core.S, core.A), dtype=torch.float64, device=core.device)
        self.t = torch.zeros(core.B, dtype=torch.long, device=core.device)

    def _greedy(self, obs, info) -> torch.Tensor:
        """Greedy in Q at the obs's state and the step of the episode (counted from the episode-start flags)."""
        state = split_obs(self.core, obs)[0].argmax(1)
        self.t = torch.where(info["episode_start"], 0, self.t + 1)
        b = torch.arange(self.core.B, device=self.core.device)
        return self.q[b, self.t, state].argmax(-1)


class MDPOracle(_MDPPolicy):
    """Knows each trial's MDP and acts optimally for the horizon (value iteration): the upper bound."""

    def act(self, obs, info):
        fresh = info["trial_start"].nonzero().squeeze(1)
        if fresh.numel():
            c = self.core
            self.q[fresh] = finite_horizon_q(c.reward_mean[fresh], c.transition[fresh], c.horizon)
        return self._greedy(obs, info)


class PSRL(_MDPPolicy):
    """Posterior sampling for RL (Osband et al. 2013), RL^2's MDP baseline: at each episode start, sample an
    MDP from the posterior (Dirichlet(1) prior on transitions; N(``reward_prior_mean``, 1) prior on each mean
    reward, known unit noise) and follow its finite-horizon optimal policy for the episode.

    The default prior mean 0 is TabulaRL's default, which RL^2's baseline script kept (its PSRL scores 138.1);
    the task's true prior, ``reward_prior_mean=1``, scores lower here (about 135 over 10 episodes): the
    pessimistic prior explores less, which pays over so few episodes."""

    def __init__(self, reward_prior_mean: float = 0.0):
        self.mu0 = float(reward_prior_mean)

    def start(self, core, seed=0):
        super().start(core, seed)
        S, A, dev = core.S, core.A, core.device
        self.alpha = torch.ones((core.B, S, A, S), dtype=torch.float64, device=dev)  # Dirichlet counts
        self.n = torch.zeros((core.B, S, A), dtype=torch.float64, device=dev)
        self.rsum = torch.zeros_like(self.n)
        self.last = None  # (state, action) of the previous step

    def act(self, obs, info):
        c, b = self.core, torch.arange(self.core.B, device=self.core.device)
        state = split_obs(c, obs)[0].argmax(1)
        if self.last is not None:  # the previous step's transition; its true next state where it ended
            nxt = state
            if "final_obs" in info:
                nxt = torch.where(info["_final_obs"], split_obs(c, info["final_obs"])[0].argmax(1), state)
            s, a = self.last
            self.alpha[b, s, a, nxt] += 1.0
            self.n[b, s, a] += 1.0
            self.rsum[b, s, a] += split_obs(c, obs)[2].double()
        fresh = info["trial_start"]
        self.alpha[fresh] = 1.0
        self.n[fresh] = 0.0
        self.rsum[fresh] = 0.0
        rows = info["episode_start"].nonzero().squeeze(1)
        if rows.numel():
            g = self.rng.gamma(self.alpha[rows].cpu().numpy())
            p = torch.as_tensor(g / g.sum(-1, keepdims=True), device=c.device)
            tau = 1.0 + self.n[rows]  # posterior precision of each mean reward (prior precision 1, unit noise)
            z = torch.as_tensor(self.rng.standard_normal(tuple(tau.shape)), device=c.device)
            mu = (self.mu0 + self.rsum[rows]) / tau + z / tau.sqrt()
            self.q[rows] = finite_horizon_q(mu, p, c.horizon)
        action = self._greedy(obs, info)
        self.last = (state, action)
        return action


# ---------------------------------------------------------------------------------------------- evaluation
def _acting(policy, core, seed, deterministic: bool):
    """``act(obs, info) -> actions`` for a ``TrialPolicy`` (started on ``core`` with the first seed) or an ``Agent``
    (its recurrent state carried inside; it resets where ``info["trial_start"]`` is set)."""
    if not hasattr(policy, "initial_state"):
        policy.start(core, int(np.asarray(seed).reshape(-1)[0]))
        return policy.act
    state = [policy.initial_state(core.B)]

    def act(obs, info):
        action, state[0] = policy.act(obs, state[0], info, deterministic)
        return action

    return act


def evaluate_trials(policy, core, trials: int, seed=0, deterministic: bool = False) -> np.ndarray:
    """Total reward of each of the first ``trials`` trials to finish [trials] float64, from ``core.reset(seed)``
    (rows finishing on the same step in row order; with trials = B, entry b is the trial of seed + b).
    ``policy`` is a ``TrialPolicy`` or an ``Agent`` (act(obs, state, info, deterministic)); agents reset
    their own recurrent state where ``info["trial_start"]`` is set."""
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"evaluate_trials: trials must be an integer >= 1, got {trials!r}")
    obs, info = core.reset(seed=seed)
    act = _acting(policy, core, seed, deterministic)
    out: list[float] = []
    with torch.no_grad():
        while len(out) < trials:
            obs, _, _, _, info = core.step(act(obs, info))
            if "_trial" in info:
                out.extend(info["trial"]["r"][info["_trial"]].tolist())
    return np.asarray(out[:trials], dtype=np.float64)


__all__ = ["PSRL", "UCB1", "BanditOracle", "BayesBandit", "MDPOracle", "RandomPolicy", "Thompson", "TrialPolicy",
           "bayes_regret", "evaluate_trials", "finite_horizon_q", "tuned_ucb1"]
