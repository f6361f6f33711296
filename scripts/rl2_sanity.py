"""RL^2-PPO on Duan et al.'s meta-RL sanity tasks, against the paper's numbers (docs/reference.md §6).

Trains ``rl2_ppo`` with ``core.driver.drive`` (the act / observe / update cycle of train.py) on Bernoulli
bandits or random tabular MDPs, then measures total reward per trial on 1,000 fresh instances (seeds never
used in training), greedy and sampled, with a 95% confidence interval, next to random and the paper's
RL^2 and classic baselines. Results and commands: docs/rl2.md.

    OMP_NUM_THREADS=1 nice python scripts/rl2_sanity.py --task bandit10 --steps 1500000

``--agent dreamer_rl2`` trains the meta-RL DreamerV3 instead (the small preset DREAMER_HP below, the same
evaluation); ``--agent dreamer`` with ``--hp reset_at='"episode"'`` is its non-meta control.

``--select-every N`` keeps the best weights (model selection): every N env steps the greedy agent is scored on
``--select-trials`` *monitoring* instances (seeds disjoint from training's and the evaluation's; on bandits its exact
Bayes-expected return, elsewhere its mean return) with every random generator restored afterwards, so training is
the same as without it; the best weights (a tie goes to the later ones) are evaluated at the end beside the final
weights, on the same 1,000 fresh instances (``greedy_selected`` in the JSON).

``--extra-updates N`` (Dreamer agents) adds N gradient updates on the replay after training and before the
evaluation, with no env steps: the run's env-step count (the sample-efficiency budget) is unchanged, only the
compute grows. ``--extra-log K`` prints, every K of them, the greedy agent's Bayes-expected return on 1,000
*monitoring* instances (seeds disjoint from the evaluation's, so nothing is chosen on the evaluation set).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from dreamalloc.agents.dreamer import DreamerAgent, DreamerRL2Agent
from dreamalloc.agents.rl2_ppo import RL2PPOAgent
from dreamalloc.core.driver import drive
from dreamalloc.experiment.checkpoint import load_checkpoint, save_checkpoint
from dreamalloc.experiment.seeding import rng_preserved
from dreamalloc.metatasks.baselines import (
    PSRL,
    BanditOracle,
    BayesBandit,
    MDPOracle,
    RandomPolicy,
    Thompson,
    bayes_regret,
    evaluate_trials,
    tuned_ucb1,
)
from dreamalloc.metatasks.env import BanditCore, TabularMDPCore

EVAL_SEED = 10**9  # far from the training seeds (seed .. seed + envs - 1, then their later trials)
MONITOR_SEED = 2 * 10**9  # --extra-log's instances: neither training's nor the evaluation's

# task -> (env factory, paper numbers, agent hyperparameters); one chunk = one trial where it fits
TASKS = {
    "bandit10": (lambda B: BanditCore(B, arms=5, pulls=10),
                 {"random": 5.0, "Gittins": 6.6, "UCB1": 6.7, "RL^2": 6.7},
                 dict(n_steps=100, bptt=10, batch_size=1000, gamma=0.99, gae_lambda=0.95)),
    "bandit100": (lambda B: BanditCore(B, arms=5, pulls=100),
                  {"random": 49.9, "Gittins": 78.3, "UCB1": 78.0, "RL^2": 78.7},
                  dict(n_steps=100, bptt=100, batch_size=2000, gamma=0.99, gae_lambda=0.95)),
    "mdp10": (lambda B: TabularMDPCore(B, states=10, actions=5, horizon=10, episodes=10),
              {"random": 100.1, "PSRL": 138.1, "RL^2": 156.2},
              dict(n_steps=100, bptt=100, batch_size=2000, gamma=0.99, gae_lambda=0.95)),
}

# the dreamer agents' preset for these tasks: a small world model (a bandit's posterior is a handful of counts),
# sequences of a few trials, one update every batch_size * batch_length / train_ratio env steps
DREAMER_HP = dict(deter=128, hidden=64, stoch=16, classes=4, blocks=2, units=64, enc_layers=2, dec_layers=2,
                  ac_layers=2, bins=63, lr=3e-4, warmup=100, batch_size=16, batch_length=32, train_ratio=32.0,
                  imag_length=10, imag_last=8, learning_starts=1024, replay_size=200_000)
AGENTS = {"rl2_ppo": RL2PPOAgent, "dreamer_rl2": DreamerRL2Agent, "dreamer": DreamerAgent}
LABELS = {"rl2_ppo": "RL^2-PPO", "dreamer_rl2": "Dreamer-RL^2", "dreamer": "Dreamer"}


class Selection:
    """Model selection: ``score(agent)`` every ``every`` env steps (every random generator restored afterwards, so
    training is unchanged); the best-scoring weights are kept in memory (ties go to the later ones)."""

    def __init__(self, every: int, score):
        self.every, self.score, self.next = int(every), score, int(every)
        self.history: list[tuple[int, float]] = []
        self.best_step, self.best_score, self.best_state = None, None, None

    def __call__(self, agent, step: int) -> None:
        with rng_preserved(), torch.no_grad():
            value = float(self.score(agent))
        self.history.append((int(step), value))
        if self.best_score is None or value >= self.best_score:
            self.best_step, self.best_score = int(step), value
            self.best_state = copy.deepcopy(agent.state_dict(include_replay=False))
        print(f"  {step:>10,} steps  selection score {value:.4f} (best {self.best_score:.4f} at "
              f"{self.best_step:,})", flush=True)

    def maybe(self, agent, step: int, last: bool = False) -> None:
        """Score at the first step at or past each multiple of ``every``, and at the ``last`` step (once)."""
        if step >= self.next or (last and (not self.history or self.history[-1][0] != step)):
            self.next = (step // self.every + 1) * self.every
            self(agent, step)


def train(agent, core, steps: int, seed: int, minutes: float | None, log_every: int,
          curve: list | None = None, selection: Selection | None = None) -> tuple[int, list[float]]:
    """core.driver.drive's act / observe / update cycle, stopped at ``steps`` env steps or after ``minutes`` of
    wall-clock (whichever comes first); prints the mean trial return now and then (and appends (step, mean,
    seconds) to ``curve``); ``selection`` scores the agent as it goes (and once more at the end). Returns (steps
    done, trial returns)."""
    t0 = time.perf_counter()
    deadline = None if minutes is None else t0 + 60.0 * minutes
    done, next_log = [0], [log_every]

    def on_step(step: int, returns: list[float]) -> bool:
        done[0] = step
        if selection is not None:
            selection.maybe(agent, step)
        if step >= next_log[0]:
            next_log[0] += log_every
            m = float(np.mean(returns[-1000:]))
            print(f"  {step:>10,} steps  mean trial return (last 1000) {m:.3f}", flush=True)
            if curve is not None:
                curve.append((step, m, time.perf_counter() - t0))
        return deadline is not None and time.perf_counter() >= deadline

    returns = drive(agent, core, steps, seed=seed, on_step=on_step, returns_key="trial")
    if selection is not None and done[0]:
        selection.maybe(agent, done[0], last=True)  # the final weights compete too
    return done[0], returns


def extra_updates(agent, n: int, log_every: int, monitor, curve: list) -> float:
    """``n`` gradient updates of a Dreamer agent on its replay (no env steps); every ``log_every`` of them (when
    there is a ``monitor``: the greedy agent's exact expected return on the monitoring instances, bandits only) its
    score is printed and appended to ``curve`` as (extra updates, expected return, seconds). Returns the seconds
    taken."""
    if n and getattr(agent, "replay", None) is None:
        raise SystemExit("--extra-updates: the agent has no replay (train first, or --resume a checkpoint saved "
                         "with its replay; Dreamer agents only)")
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        agent.train_step()
        if monitor is not None and log_every and (i % log_every == 0 or i == n):
            value, dt = monitor(agent), time.perf_counter() - t0
            print(f"  extra update {i:>7,}  greedy expected return (monitoring instances) {value:.3f}  {dt:.0f} s",
                  flush=True)
            curve.append((i, value, dt))
    return time.perf_counter() - t0


def mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and its normal-approximation 95% interval."""
    m, half = float(x.mean()), 1.96 * float(x.std(ddof=1)) / np.sqrt(len(x))
    return m, m - half, m + half


def baselines(task: str, make_core, trials: int) -> dict[str, tuple[float, float, float]]:
    """Random, the adaptive references and the oracle on the evaluation instances themselves."""
    pols = {"random": RandomPolicy()}
    if task.startswith("bandit"):
        core = make_core(1)
        pols.update(Thompson=Thompson(), oracle=BanditOracle())
        if core.pulls <= BayesBandit.MAX_PULLS:
            pols["Bayes-optimal"] = BayesBandit()
    else:
        pols.update(PSRL=PSRL(), oracle=MDPOracle())
    out = {k: mean_ci(evaluate_trials(p, make_core(trials), trials, seed=EVAL_SEED)) for k, p in pols.items()}
    if task.startswith("bandit"):
        _, x, _ = tuned_ucb1(core.arms, core.pulls, trials, seed=EVAL_SEED)
        out["UCB1 (tuned c)"] = mean_ci(x)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), default="bandit10")
    p.add_argument("--agent", choices=sorted(AGENTS), default="rl2_ppo")
    p.add_argument("--steps", type=int, default=2_000_000, help="env steps of training")
    p.add_argument("--envs", type=int, default=64, help="parallel envs (rows of the batched task)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="stop training after this much wall-clock")
    p.add_argument("--log-every", type=int, default=200_000, help="env steps between progress lines")
    p.add_argument("--trials", type=int, default=1000, help="fresh instances to evaluate on")
    p.add_argument("--hp", nargs="*", default=[], metavar="KEY=VALUE",
                   help="agent hyperparameter overrides (JSON values), e.g. lr=1e-3 hidden=[64]")
    p.add_argument("--select-every", type=int, default=0, metavar="N",
                   help="model selection: score the greedy agent on monitoring instances every N env steps and "
                        "evaluate the best weights too (0: off)")
    p.add_argument("--select-trials", type=int, default=1000,
                   help="monitoring instances per selection score (and per --extra-log score)")
    p.add_argument("--extra-updates", type=int, default=0,
                   help="Dreamer agents: gradient updates on the replay after training, no env steps")
    p.add_argument("--extra-log", type=int, default=0, help="print the monitoring expected return every K of them")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--save", help="write the trained agent here (a dreamalloc checkpoint)")
    p.add_argument("--resume", help="start from an agent saved with --save (its networks and optimiser; the "
                                    "hyperparameters are this run's, so e.g. --hp ent_coef=0.003 continues with less "
                                    "entropy; pass a new --seed for new training instances)")
    a = p.parse_args(argv)
    if a.select_every < 0 or a.select_trials < 2:
        p.error("--select-every must be >= 0 and --select-trials >= 2")
    make_core, paper, hp = TASKS[a.task]
    if a.agent == "rl2_ppo":
        hp = dict(hp, hidden=[64], rnn_hidden=64, lr=1e-3, clip=0.1, ent_coef=0.01, n_epochs=8,
                  total_steps=a.steps)  # what lr / clip annealing count down to (as total_steps: ${steps} in yaml)
    else:
        hp = dict(DREAMER_HP)
    for kv in a.hp:
        k, v = kv.split("=", 1)
        hp[k] = json.loads(v)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    core = make_core(a.envs)
    agent = AGENTS[a.agent](core.obs_dim, core.n_actions, core.spec, "cpu", **hp)
    expected = {"agent": agent.name, "task": a.task, "obs_dim": core.obs_dim, "n_actions": core.n_actions}
    if a.resume:
        agent.load_state_dict(load_checkpoint(a.resume, expected)["agent"])
    bayes_value = None  # the Bayes-optimal policy's expected return, where the exact reference exists
    if a.task.startswith("bandit") and make_core(1).pulls <= BayesBandit.MAX_PULLS:
        bayes = BayesBandit()
        bayes.start(make_core(1))
        bayes_value = bayes.value()

    def monitor(agent) -> float:  # the greedy agent on the monitoring instances (never the evaluation's)
        n = a.select_trials
        if bayes_value is not None:
            return bayes_value - float(bayes_regret(agent, make_core(n), seed=MONITOR_SEED).sum())
        return float(evaluate_trials(agent, make_core(n), n, seed=MONITOR_SEED, deterministic=True).mean())

    selection = Selection(a.select_every, monitor) if a.select_every else None
    t0 = time.perf_counter()
    curve: list = []
    steps, returns = train(agent, core, a.steps, a.seed, a.minutes, a.log_every, curve, selection)
    train_s = time.perf_counter() - t0
    extra_curve: list = []
    extra_s = extra_updates(agent, a.extra_updates, a.extra_log, monitor if bayes_value is not None else None,
                            extra_curve) \
        if a.extra_updates else 0.0
    if a.save:
        save_checkpoint(a.save, {"meta": expected, "agent": agent.state_dict(), "hp": hp})
    out = {"agent": a.agent, "task": a.task, "steps": steps, "envs": a.envs, "seed": a.seed, "hp": hp,
           "train_s": train_s, "curve": curve, "extra_updates": a.extra_updates, "extra_s": extra_s,
           "extra_curve": extra_curve,
           "updates": agent.n_updates, "train_last_1000_trials": float(np.mean(returns[-1000:])) if returns else None}

    def score(deterministic: bool):
        return mean_ci(evaluate_trials(agent, make_core(a.trials), a.trials, seed=EVAL_SEED,
                                       deterministic=deterministic))

    def regret():  # the greedy policy's expected shortfall from the Bayes-optimal one on the same instances, per
        # pull: a lower-variance view of where it loses than the returns (baselines.bayes_regret)
        return bayes_regret(agent, make_core(a.trials), seed=EVAL_SEED).tolist()

    out["greedy"], out["sampled"] = score(True), score(False)
    if bayes_value is not None:
        out["bayes_value"], out["greedy_bayes_regret"] = bayes_value, regret()
    if getattr(agent, "ema_wm", None) is not None:  # greedy_ema: the same greedy evaluation on the trained weights
        with agent.greedy_on_trained_weights():
            out["greedy_trained_weights"] = score(True)
            if bayes_value is not None:
                out["greedy_trained_weights_bayes_regret"] = regret()
    if selection is not None and selection.best_state is not None:  # the kept weights, on the same instances
        agent.load_state_dict(selection.best_state)
        out["selection"] = {"every": a.select_every, "trials": a.select_trials, "history": selection.history,
                            "best_step": selection.best_step, "best_score": selection.best_score}
        out["greedy_selected"] = score(True)
        if bayes_value is not None:
            out["greedy_selected_bayes_regret"] = regret()
    out["wall_s"] = time.perf_counter() - t0
    out["baselines"] = baselines(a.task, make_core, a.trials)
    ref = ", ".join(f"{k} {v}" for k, v in paper.items())
    extra = f" of which {a.extra_updates} after training, {extra_s:.0f} s" if a.extra_updates else ""
    print(f"{a.task}: {steps:,} env steps ({a.envs} envs, {agent.n_updates} updates{extra}), "
          f"train {train_s:.0f} s, total {out['wall_s']:.0f} s")
    for mode in ("greedy", "sampled"):
        m, lo, hi = out[mode]
        print(f"  {LABELS[a.agent]} {mode:8s} {m:7.2f} [{lo:.2f}, {hi:.2f}] over {a.trials} fresh instances")
    if "greedy_trained_weights" in out:
        m, lo, hi = out["greedy_trained_weights"]
        print(f"  {LABELS[a.agent]} greedy on the trained weights (the greedy rows act on their average, "
              f"greedy_ema) {m:.2f} [{lo:.2f}, {hi:.2f}]")
        if "greedy_trained_weights_bayes_regret" in out:
            r = float(np.sum(out["greedy_trained_weights_bayes_regret"]))
            print(f"  ... expected shortfall {r:.3f} (expected return {out['bayes_value'] - r:.2f})")
    if "greedy_selected" in out:
        m, lo, hi = out["greedy_selected"]
        sel = out["selection"]
        print(f"  {LABELS[a.agent]} greedy, selected weights (step {sel['best_step']:,}, monitoring score "
              f"{sel['best_score']:.3f}) {m:.2f} [{lo:.2f}, {hi:.2f}]")
        if "greedy_selected_bayes_regret" in out:
            r = float(np.sum(out["greedy_selected_bayes_regret"]))
            print(f"  ... expected shortfall {r:.3f} (expected return {out['bayes_value'] - r:.2f})")
    if "greedy_bayes_regret" in out:
        r = np.asarray(out["greedy_bayes_regret"])
        print(f"  {LABELS[a.agent]} greedy: expected shortfall from the Bayes-optimal policy {r.sum():.3f} "
              f"(expected return {out['bayes_value'] - r.sum():.2f} of {out['bayes_value']:.2f}); per pull "
              + " ".join(f"{x:.3f}" for x in r))
    same = ", ".join(f"{k} {m:.2f} [{lo:.2f}, {hi:.2f}]" for k, (m, lo, hi) in out["baselines"].items())
    print(f"  same instances: {same}")
    print(f"  paper (Duan et al. 2016, Table 1): {ref}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
