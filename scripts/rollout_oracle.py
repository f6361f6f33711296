"""A hindsight reference that does not compact: one-step lookahead over the visible holes, best fit after.

The capacity bound (a heap that compacts) says how far up any allocator could go, but no placement policy can
move blocks, so on most pattern sets it overstates the room a policy has over the fixed rules by far (at 4,096
cells `shift_lifetimes`' families: bound 41.5 against the best rule's 16.1). This script measures a tighter
reference in the learners' own action space. At every decision where more than one of the ``holes`` shortest
fitting runs is open, it copies the env (heap and stream, exactly) into one row per hole, places the request in
that row's hole, lets best fit play the rest of the episode on the known future stream, and then takes the hole
whose row lived longest (ties: the shortest hole, i.e. best fit). It is a rollout policy in Bertsekas' sense with
best fit as the base policy: on a deterministic env its return is never below best fit's, episode for episode, and
it sees the future, so it is a reference, not a policy a learner could match. If it gains little over best fit, a
set leaves a placement policy little to gain; if it gains a lot, the room is there for a learner to look for.

Same streams as ``evaluate.py`` (trial t on stream seed ``eval.seed + t``, ``eval.episodes_per_trial`` episodes
each), so the figures pair with the tables of ``scripts/compare.py``; the same size-free hole space as the
learners of docs/peak.md (holes listed shortest first: hole 0 is best fit's run).

    python scripts/rollout_oracle.py --suite shift_lifetimes --cells 4096 --trials 16 --sets ranges families shifts

Cost: a decision replays the rest of its episode once per open hole (batched), so an episode of L decisions costs
about L^2 / 2 batched steps: seconds for the pattern sets' episodes of a few hundred requests, hours for a trace
replayed to the 2 N truncation (leave such sets out with ``--sets``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from dreamalloc.alloc import AllocCore  # noqa: E402
from dreamalloc.core.spec import ACTION_MASK  # noqa: E402
from dreamalloc.experiment.config import env_config, register_configs, tasks_of, validate  # noqa: E402
from dreamalloc.report.stats import mean_ci  # noqa: E402
from dreamalloc.report.tables import markdown_table  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def tile_state(src, like):
    """``src`` (a batched core's ``state_dict`` with one row) spread over the rows of ``like`` (the state of a
    core with K rows): every tensor whose first dimension is 1 in ``src`` and K in ``like`` is repeated K times;
    everything else (tables shared by the rows) is taken as it is. Anything else that differs is an error."""
    if isinstance(src, dict):
        if set(src) != set(like):
            raise ValueError(f"state keys differ: {sorted(set(src) ^ set(like))}")
        return {k: tile_state(src[k], like[k]) for k in src}
    if isinstance(src, (list, tuple)):
        return type(src)(tile_state(s, t) for s, t in zip(src, like, strict=True))
    if isinstance(src, torch.Tensor):
        if src.shape == like.shape:
            return src.clone()
        if src.dim() >= 1 and src.shape[0] == 1 and src.shape[1:] == like.shape[1:]:
            return src.expand(like.shape).clone()
        raise ValueError(f"state tensor of shape {tuple(src.shape)} cannot fill one of shape {tuple(like.shape)}")
    return src


def _rest_of_episode(sim: AllocCore, first: torch.Tensor, valid: torch.Tensor, stop_early: bool) -> torch.Tensor:
    """Return-to-go of every ``valid`` row of ``sim``: ``first`` now, best fit (hole 0) after, each row until its
    episode ends (later steps of a row that has ended are not counted). With ``stop_early`` (rewards that cannot
    be negative), the rollouts stop once a single row is still alive and already ahead of every row that ended:
    its score is then +inf (it wins whatever it adds), the choice the same as playing it out."""
    K = sim.B
    total = torch.zeros(K, dtype=torch.float64)
    live = valid.clone()
    action = first
    while bool(live.any()):
        _, reward, term, trunc, _ = sim.step(action)
        total += torch.where(live, reward.double(), torch.zeros(K, dtype=torch.float64))
        live &= ~(term | trunc)
        action = torch.zeros(K, dtype=torch.long)
        if stop_early and int(live.sum()) == 1:
            ended = valid & ~live
            row = int(live.nonzero()[0, 0])
            if not bool(ended.any()) or float(total[row]) > float(total[ended].max()):
                total[row] = np.inf
                break
    total[~valid] = -np.inf
    return total


def play(env, seed: int, episodes: int, lookahead: bool = True, stop_early: bool | None = None) -> dict:
    """One trial (stream seed ``seed``, ``episodes`` episodes) on a one-heap core of ``env`` (an AllocConfig in the
    hole space), the lookahead's choices or best fit's (``lookahead=False``). Returns per-episode returns and how
    many decisions had more than one open hole / took another hole than best fit. ``stop_early`` (default: when no
    reward can be negative, i.e. episodes end at the first failure and an allocation earns >= 0) cuts rollouts
    whose winner is already known."""
    if stop_early is None:
        stop_early = env.on_fail == "end" and env.alloc_reward >= 0
    real = AllocCore(1, env)
    sim = AllocCore(int(env.holes), env) if lookahead else None
    like = sim.state_dict() if lookahead else None
    _, info = real.reset(seed=seed)
    returns, ret, branched, moved = [], 0.0, 0, 0
    while len(returns) < episodes:
        a = torch.zeros(1, dtype=torch.long)
        mask = info.get(ACTION_MASK)
        if lookahead and mask is not None and int(mask[0].sum()) > 1:
            branched += 1
            sim.load_state_dict(tile_state(real.state_dict(), like))
            score = _rest_of_episode(sim, torch.arange(sim.B), mask[0].clone(), stop_early)
            best = int(torch.argmax(score))  # the first maximum: ties go to the shorter hole
            moved += best != 0
            a[0] = best
        _, reward, term, trunc, info = real.step(a)
        ret += float(reward[0])
        if bool(term[0] or trunc[0]):
            returns.append(ret)
            ret = 0.0
    return {"returns": returns, "branched": branched, "moved": moved}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="shift_lifetimes")
    p.add_argument("--cells", type=int, default=4096)
    p.add_argument("--holes", type=int, default=8)
    p.add_argument("--trials", type=int, default=16, help="trials per task (eval.trials of the runs to pair with)")
    p.add_argument("--sets", nargs="*", default=[], help="held-out sets to play (default: all)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    register_configs()
    overrides = [f"suite={a.suite}", f"env.cells={a.cells}", "env.action=hole", f"env.holes={a.holes}",
                 "env.hole_order=size", "env.bitmap=false", "env.summary=true", f"env.hole_features={a.holes}",
                 "env.size_scale=fraction", f"eval.trials={a.trials}", *a.set]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    unknown = sorted(set(a.sets) - set(cfg.suite.heldout))
    if unknown:
        p.error(f"no held-out set {', '.join(unknown)} in suite {a.suite}; it has {', '.join(cfg.suite.heldout)}")
    seed0, k = int(cfg.eval.seed), int(cfg.eval.episodes_per_trial)
    rows = []
    for set_name, tasks in cfg.suite.heldout.items():
        if a.sets and set_name not in a.sets:
            continue
        for task in tasks_of(tasks):
            env = replace(env_config(cfg.env, [task]), trial_episodes=k)  # a trial keeps its task for K episodes
            t0 = time.time()
            base = [play(env, seed0 + t, k, lookahead=False) for t in range(a.trials)]
            look = [play(env, seed0 + t, k) for t in range(a.trials)]
            b = np.array([np.mean(r["returns"]) for r in base])
            o = np.array([np.mean(r["returns"]) for r in look])
            _, lo, hi = mean_ci(o - b)
            rows.append({"set": set_name, "task": task["name"], "best_fit": float(b.mean()),
                         "lookahead": float(o.mean()), "gain": float((o - b).mean()), "gain_lo": lo, "gain_hi": hi,
                         "decisions_branched": int(sum(r["branched"] for r in look)),
                         "moved_off_best_fit": int(sum(r["moved"] for r in look)),
                         "seconds": round(time.time() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    sets = []
    for s in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == s]
        bf, lk = np.mean([r["best_fit"] for r in mine]), np.mean([r["lookahead"] for r in mine])
        sets.append({"set": s, "tasks": len(mine), "best_fit": bf, "lookahead": lk, "gain": lk - bf,
                     "gain_pct": 100.0 * (lk - bf) / bf if bf else float("nan")})
    print(markdown_table(rows, ["set", "task", "best_fit", "lookahead", "gain", "gain_lo", "gain_hi",
                                "decisions_branched", "moved_off_best_fit", "seconds"], digits=3))
    print(markdown_table(sets, ["set", "tasks", "best_fit", "lookahead", "gain", "gain_pct"], digits=3))
    if a.json:
        Path(a.json).write_text(json.dumps({"tasks": rows, "sets": sets}, indent=1))
    return rows


if __name__ == "__main__":
    main()
