"""Hand-written placement policies of the ``hole`` action space against every fixed rule, per held-out set.

How much room do a suite's held-out sets leave a policy that sees what a learner sees? The policies here read
only the size-free observation a learner gets (the request and the first ``holes`` fitting runs' start and length,
as fractions of the heap, holes listed shortest first: ``hole_order=size``), so anything they reach a learner
could reach too:

- ``best``: hole 0, always (best fit: a check of the setup, it must equal the rule);
- ``top:T``: a request larger than T (a fraction of the heap) goes to the visible hole that starts highest, a
  smaller one to hole 0 (best fit): small and large blocks kept apart at the two ends of the heap;
- ``low:T``: a request of at most T goes to the visible hole that starts lowest, a larger one to hole 0.

Each policy plays the suite's held-out tasks through the evaluation harness (same streams, trials and seeds as
``evaluate.py``); the table gives its set return (mean over the set's tasks), the best fixed rule's, their
difference, ``rule_per_task`` (each task's own best rule) and the capacity bound.

    python scripts/hole_policies.py --suite shift_lifetimes --cells 4096 --policies best top:0.015 low:0.015
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from dreamalloc.agents.base import Agent  # noqa: E402
from dreamalloc.experiment.config import make_core, register_configs, validate  # noqa: E402
from dreamalloc.experiment.evaluation import evaluate_suite  # noqa: E402
from dreamalloc.report.tables import markdown_table, set_rows  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
RULES = ["best", "worst", "first", "next", "second"]


class HolePolicy(Agent):
    """``kind`` (best | top | low) with threshold ``t`` on the observation of a size-free hole-space env."""

    name = "hole_policy"

    def __init__(self, obs_dim: int, n_actions: int, env_cfg, kind: str, t: float):
        super().__init__(obs_dim, n_actions, None, torch.device("cpu"))
        if env_cfg.bitmap or env_cfg.size_scale != "fraction" or env_cfg.hole_order != "size" \
                or int(env_cfg.hole_features) < int(env_cfg.holes):
            raise ValueError("hole policies read the size-free observation: env.bitmap=false, "
                             "env.size_scale=fraction, env.hole_order=size, env.hole_features >= env.holes")
        self.kind, self.t, self.k = kind, float(t), int(env_cfg.holes)
        self.holes_at = 1 + int(env_cfg.history) + 4 * int(bool(env_cfg.summary))  # after request, history, summary

    def initial_state(self, batch: int):
        return None

    def act(self, obs, state, info, deterministic=False):
        req = obs[:, 0]
        feats = obs[:, self.holes_at: self.holes_at + 2 * self.k].reshape(-1, self.k, 2)
        start, fits = feats[..., 0], feats[..., 1] > 0
        zero = torch.zeros_like(req, dtype=torch.long)
        if self.kind == "best":
            return zero, state
        if self.kind == "top":
            high = torch.where(fits, start, torch.full_like(start, -1.0)).argmax(1)
            return torch.where(req > self.t, high, zero), state
        low = torch.where(fits, start, torch.full_like(start, 2.0)).argmin(1)
        return torch.where(req <= self.t, low, zero), state


def parse_policy(text: str) -> tuple[str, float]:
    kind, _, t = text.partition(":")
    if kind not in ("best", "top", "low") or (kind != "best" and not t):
        raise ValueError(f"policy {text!r}: write best, top:T or low:T (T a fraction of the heap, e.g. top:0.015)")
    return kind, float(t or 0.0)


def set_table(res: dict) -> list[dict]:
    """``report.tables.set_rows`` of one deterministic evaluation, the return as a number (one seed: no interval)."""
    rows = []
    for r in set_rows([res]):
        ret = r["return"][0]
        kept = {k: v for k, v in r.items() if k not in ("label", "n_seeds", "vs_best_rule", "beats_best_rule")}
        rows.append({**kept, "policy": r["label"], "return": ret, "minus_best_rule": ret - r["best_rule_return"]})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="shift_lifetimes")
    p.add_argument("--cells", type=int, default=4096)
    p.add_argument("--holes", type=int, default=8)
    p.add_argument("--trials", type=int, default=8, help="evaluation trials per task (eval.trials)")
    p.add_argument("--policies", nargs="+", default=["best", "top:0.015", "low:0.015"])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    try:
        policies = [(text, *parse_policy(text)) for text in a.policies]
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(1)
    register_configs()
    overrides = [f"suite={a.suite}", f"env.cells={a.cells}", "env.action=hole", f"env.holes={a.holes}",
                 "env.hole_order=size", "env.bitmap=false", "env.summary=true", f"env.hole_features={a.holes}",
                 "env.size_scale=fraction", f"eval.trials={a.trials}", f"env.heuristics=[{','.join(RULES)}]", *a.set]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    rows = []
    for label, kind, t in policies:
        agent = HolePolicy(core.obs_dim, core.n_actions, cfg.env, kind, t)
        res = evaluate_suite(agent, cfg.env, cfg.suite, cfg.eval, torch.device("cpu"), label, 0, 0, progress=False)
        rows += set_table(res)
    print(markdown_table(rows, ["policy", "set", "tasks", "return", "best_rule", "best_rule_return",
                                "minus_best_rule", "rule_per_task", "capacity_bound"], digits=3))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
