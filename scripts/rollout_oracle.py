"""A hindsight reference that does not compact: one-step lookahead over the visible holes, a fixed rule after.

The capacity bound (a heap that compacts) says how far up any allocator could go, but no placement policy can
move blocks, so on most pattern sets it overstates the room a policy has over the fixed rules by far (at 4,096
cells `shift_lifetimes`' families: bound 41.5 against the best rule's 16.1). This script measures a tighter
reference in the learners' own action space. At every decision where more than one of the ``holes`` shortest
fitting runs is open, it copies the env (heap and stream, exactly) into one row per hole, places the request in
that row's hole, lets a base rule play the rest of the episode on the known future stream, and then takes the hole
whose row lived longest (ties: the base rule's own hole). It is a rollout policy in Bertsekas' sense: on a
deterministic env its return is never below the base rule's, episode for episode, and it sees the future, so it is
a reference, not a policy a learner could match. If it gains little over the best rule, a set leaves a placement
policy little to gain; if it gains a lot, the room is there for a learner to look for.

Base rules (``--base``), each one a hole of the hole space: ``best`` (holes listed shortest first, hole 0: best
fit), ``first`` (holes in address order, hole 0: first fit) and ``second`` (address order, hole 1 where two or
more runs fit, else hole 0: second fit). The order is also the order in which the lookahead sees the holes.

Same streams as ``evaluate.py`` (trial t on stream seed ``eval.seed + t``, ``eval.episodes_per_trial`` episodes
each), so the figures pair with the tables of ``scripts/compare.py``; the size-free hole space of the learners of
docs/peak.md (in the base rule's hole order).

    python scripts/rollout_oracle.py --suite shift_lifetimes --cells 4096 --trials 16 --sets ranges families shifts
    python scripts/rollout_oracle.py --suite shift_lifetimes --cells 4096 --trials 16 --sets families \
        --tasks fixed fifo ramp --base second

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
BASES = {"best": "size", "first": "address", "second": "address"}  # base rule -> the hole order it is a hole of


def base_action(base: str, mask: torch.Tensor) -> torch.Tensor:
    """The base rule's hole per row, from the rows' action masks [B, holes] (in the rule's hole order)."""
    if base == "second":
        return (mask.sum(1) >= 2).long()
    return torch.zeros(mask.shape[0], dtype=torch.long)


def tile_state(src, like):
    """``src`` (a fresh ``state_dict`` of a batched core with one row) spread over the rows of ``like`` (the state
    of a core with K rows): every tensor whose first dimension is 1 in ``src`` and K in ``like`` is repeated K times;
    everything else (tables shared by the rows) is passed on as it is (``state_dict`` already copied it, and
    ``load_state_dict`` copies again). Anything else that differs is an error."""
    if isinstance(src, dict):
        if set(src) != set(like):
            raise ValueError(f"state keys differ: {sorted(set(src) ^ set(like))}")
        return {k: tile_state(src[k], like[k]) for k in src}
    if isinstance(src, (list, tuple)):
        return type(src)(tile_state(s, t) for s, t in zip(src, like, strict=True))
    if isinstance(src, torch.Tensor):
        if src.shape == like.shape:
            return src
        if src.dim() >= 1 and src.shape[0] == 1 and src.shape[1:] == like.shape[1:]:
            return src.expand(like.shape).clone()
        raise ValueError(f"state tensor of shape {tuple(src.shape)} cannot fill one of shape {tuple(like.shape)}")
    return src


def _rest_of_episode(sim: AllocCore, first: torch.Tensor, valid: torch.Tensor, base: str,
                     stop_early: bool) -> torch.Tensor:
    """Return-to-go of every ``valid`` row of ``sim``: ``first`` now, the ``base`` rule after, each row until its
    episode ends (later steps of a row that has ended are not counted). With ``stop_early`` (rewards that cannot
    be negative), the rollouts stop once a single row is still alive and already ahead of every row that ended:
    its score is then +inf (it wins whatever it adds), the choice the same as playing it out."""
    K = sim.B
    total = torch.zeros(K, dtype=torch.float64)
    live = valid.clone()
    action = first
    while bool(live.any()):
        _, reward, term, trunc, info = sim.step(action)
        total += torch.where(live, reward.double(), torch.zeros(K, dtype=torch.float64))
        live &= ~(term | trunc)
        action = base_action(base, info[ACTION_MASK])
        if stop_early and int(live.sum()) == 1:
            ended = valid & ~live
            row = int(live.nonzero()[0, 0])
            if not bool(ended.any()) or float(total[row]) > float(total[ended].max()):
                total[row] = np.inf
                break
    total[~valid] = -np.inf
    return total


def play(env, seed: int, episodes: int, lookahead: bool = True, base: str = "best",
         stop_early: bool | None = None) -> dict:
    """One trial (stream seed ``seed``, ``episodes`` episodes) on a one-heap core of ``env`` (an AllocConfig in the
    hole space, holes in the ``base`` rule's order), the lookahead's choices or the base rule's
    (``lookahead=False``). Returns per-episode returns and how many decisions had more than one open hole / took
    another hole than the base rule. ``stop_early`` (default: when no reward can be negative, i.e. episodes end at
    the first failure and an allocation earns >= 0) cuts rollouts whose winner is already known."""
    if env.action != "hole":
        raise ValueError(f"the lookahead chooses among holes: env.action=hole, got {env.action!r}")
    if base not in BASES:
        raise ValueError(f"base rule {base!r}: choose one of {', '.join(BASES)}")
    if env.hole_order != BASES[base]:
        raise ValueError(f"base rule {base} is a hole of hole_order={BASES[base]}, the env lists {env.hole_order}")
    if stop_early is None:
        stop_early = env.on_fail == "end" and env.alloc_reward >= 0
    real = AllocCore(1, env)
    sim = AllocCore(int(env.holes), env) if lookahead else None
    like = sim.state_dict() if lookahead else None
    _, info = real.reset(seed=seed)
    returns, ret, branched, moved = [], 0.0, 0, 0
    while len(returns) < episodes:
        mask = info[ACTION_MASK]  # the hole space always reports which holes fit
        a = base_action(base, mask)
        if lookahead and int(mask[0].sum()) > 1:
            branched += 1
            sim.load_state_dict(tile_state(real.state_dict(), like))
            score = _rest_of_episode(sim, torch.arange(sim.B), mask[0].clone(), base, stop_early)
            top = score == score.max()
            choice = int(a[0]) if bool(top[a[0]]) else int(top.nonzero()[0, 0])  # ties: the base rule's hole
            moved += choice != int(a[0])
            a[0] = choice
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
    p.add_argument("--tasks", nargs="*", default=[], help="tasks to play within those sets (default: all)")
    p.add_argument("--base", choices=list(BASES), default="best", help="the rule the rollouts play after the hole")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    register_configs()
    overrides = [f"suite={a.suite}", f"env.cells={a.cells}", "env.action=hole", f"env.holes={a.holes}",
                 f"env.hole_order={BASES[a.base]}", "env.bitmap=false", "env.summary=true",
                 f"env.hole_features={a.holes}", "env.size_scale=fraction", f"eval.trials={a.trials}", *a.set]
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
            if a.tasks and task["name"] not in a.tasks:
                continue
            env = replace(env_config(cfg.env, [task]), trial_episodes=k)  # a trial keeps its task for K episodes
            t0 = time.time()
            ref = [play(env, seed0 + t, k, lookahead=False, base=a.base) for t in range(a.trials)]
            look = [play(env, seed0 + t, k, base=a.base) for t in range(a.trials)]
            b = np.array([np.mean(r["returns"]) for r in ref])
            o = np.array([np.mean(r["returns"]) for r in look])
            _, lo, hi = mean_ci(o - b)
            rows.append({"set": set_name, "task": task["name"], "base": a.base, "base_return": float(b.mean()),
                         "lookahead": float(o.mean()), "gain": float((o - b).mean()), "gain_lo": lo, "gain_hi": hi,
                         "decisions_branched": int(sum(r["branched"] for r in look)),
                         "moved_off_base": int(sum(r["moved"] for r in look)),
                         "seconds": round(time.time() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    sets = []
    for s in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == s]
        bf, lk = np.mean([r["base_return"] for r in mine]), np.mean([r["lookahead"] for r in mine])
        sets.append({"set": s, "tasks": len(mine), "base": a.base, "base_return": bf, "lookahead": lk, "gain": lk - bf,
                     "gain_pct": 100.0 * (lk - bf) / bf if bf else float("nan")})
    print(markdown_table(rows, ["set", "task", "base", "base_return", "lookahead", "gain", "gain_lo", "gain_hi",
                                "decisions_branched", "moved_off_base", "seconds"], digits=3))
    print(markdown_table(sets, ["set", "tasks", "base", "base_return", "lookahead", "gain", "gain_pct"], digits=3))
    if a.json:
        Path(a.json).write_text(json.dumps({"tasks": rows, "sets": sets}, indent=1))
    return rows


if __name__ == "__main__":
    main()
