"""Golden runs: a small training + evaluation run of every agent on every env family, recorded once and compared
after every structural change, so a refactoring that changes behaviour shows up as a diff.

    python scripts/golden_runs.py            # run every case, compare with tests/golden/*.jsonl
    python scripts/golden_runs.py --write    # (re)record them (only when a change of numbers is intended)
    python scripts/golden_runs.py --case lb_ppo alloc_dqn

A case's record is its ``metrics.jsonl`` followed by one line with the evaluation's per-task returns and
references (``results.json`` without paths). CPU, one torch thread, fixed seeds. ``tests/test_golden.py`` runs
the same cases (the fast ones by default) and compares the records, floats to 1e-6 relative and training
diagnostics (losses, KL, values) to DIAG_ABS / DIAG_REL (CPUs differ in the last bits); this script says whether
they are byte for byte the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"

BASE = ["logger=disabled", "progress=off", "device=cpu", "seed=7", "eval.trials=2", "eval.episodes_per_trial=2",
        "eval.timeline=false"]
ALLOC = ["env=alloc64", "env.num_envs=8", "suite=lim2024_mixed", "steps=2048", "logger.every=256"]
LB = ["experiment=redovian2025_standard", "env.num_envs=4", "env.num_jobs=64", "steps=1024", "logger.every=128",
      "eval.trials=2", "eval.episodes_per_trial=1"]
TINY_DREAMER = ["agent=dreamer_1m", "agent.deter=64", "agent.hidden=16", "agent.units=32", "agent.blocks=2",
                "agent.classes=4", "agent.stoch=4", "agent.batch_size=4", "agent.batch_length=16",
                "agent.train_ratio=1", "agent.learning_starts=512", "agent.replay_size=4096", "agent.warmup=10"]
ONPOLICY = ["agent.n_steps=32", "agent.batch_size=64"]

CASES: dict[str, list[str]] = {
    "alloc_heuristic": ALLOC + ["agent=heuristic", "agent.rule=worst"],
    "alloc_dqn": ALLOC + ["agent=dqn", "agent.learning_starts=256"],
    "alloc_a2c": ALLOC + ["agent=a2c"],
    "alloc_ppo": ALLOC + ["agent=ppo"] + ONPOLICY,
    "alloc_rl2_ppo": ALLOC + ["agent=rl2_ppo", "env.meta_obs=true", "env.trial_episodes=2", "agent.bptt=16"]
    + ONPOLICY,
    "alloc_dreamer": ALLOC + TINY_DREAMER,
    "lb_dispatch": LB + ["agent=dispatch", "agent.rule=greedy"],
    "lb_dqn": LB + ["agent=dqn", "agent.learning_starts=128"],
    "lb_a2c": LB + ["agent=a2c"],
    "lb_ppo": LB + ["agent=ppo"] + ONPOLICY,
    "lb_rl2_ppo": LB + ["agent=rl2_ppo", "agent.bptt=16"] + ONPOLICY,
    "lb_dreamer": LB + TINY_DREAMER,
}
# The meta-RL sanity tasks: a plain act / observe / update loop (no train.py family for them).
META_CASES: dict[str, tuple[str, str, dict]] = {
    "bandit_rl2_ppo": ("bandit", "rl2_ppo", {"n_steps": 20, "bptt": 10, "batch_size": 160, "hidden": [32],
                                             "rnn_hidden": 32}),
    "mdp_rl2_ppo": ("mdp", "rl2_ppo", {"n_steps": 30, "bptt": 15, "batch_size": 120, "hidden": [32],
                                       "rnn_hidden": 32}),
    "bandit_dreamer": ("bandit", "dreamer", {"deter": 64, "hidden": 16, "units": 32, "blocks": 2, "classes": 4,
                                             "stoch": 4, "batch_size": 4, "batch_length": 16, "train_ratio": 1,
                                             "learning_starts": 512, "replay_size": 4096, "warmup": 10}),
}


def run_case(name: str, workdir: Path) -> str:
    """The record of one case: metrics.jsonl, then the evaluation (sets only, sorted keys)."""
    import torch
    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs
    from dreamalloc.experiment.training import train

    register_configs()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=BASE + CASES[name])
        cfg.run_dir = str(workdir / name / "run")
        cfg.checkpoint_dir = str(workdir / name / "ckpt")
        out = train(cfg, overrides=[])
    finally:
        torch.set_num_threads(threads)
    metrics = (Path(out["run_dir"]) / "metrics.jsonl").read_text()
    sets = json.dumps(out["results"]["sets"], sort_keys=True)
    return metrics + sets + "\n"


def run_meta_case(name: str) -> str:
    """The record of a meta-task case: per update, the mean return of the trials finished since the last
    line and the update's losses; then 16 greedy evaluation trials on fresh instances."""
    import torch

    from dreamalloc.agents import make_agent
    from dreamalloc.metatasks import BanditCore, TabularMDPCore

    task, algo, hp = META_CASES[name]

    def make(b: int):
        return BanditCore(b, arms=3, pulls=8) if task == "bandit" else TabularMDPCore(b, states=4, actions=3,
                                                                                          horizon=5, episodes=3)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(7)
        core = make(8)
        agent = make_agent(algo, core.obs_dim, core.n_actions, None, "cpu", **hp)
        obs, info = core.reset(seed=7)
        state, step, lines, finished = agent.initial_state(core.B), 0, [], []
        while step < 2048:
            action, state = agent.act(obs, state, info)
            next_obs, reward, term, trunc, info = core.step(action)
            agent.observe(obs, action, reward, term, trunc, info.get("final_obs", next_obs), info)
            obs, step = next_obs, step + core.B
            if "trial" in info:
                finished += info["trial"]["r"][info["_trial"]].tolist()
            upd = agent.update(step)
            if upd:
                lines.append({"step": step, "trials": len(finished), "return": sum(finished) / max(len(finished), 1),
                              **{k: float(v) for k, v in upd.items()}})
        ev = make(16)
        obs, info = ev.reset(seed=10_000)
        state, total = agent.initial_state(16), torch.zeros(16, dtype=torch.float64)
        done = torch.zeros(16, dtype=torch.bool)
        while not bool(done.all()):
            with torch.no_grad():
                action, state = agent.act(obs, state, info, True)
            obs, reward, _, _, info = ev.step(action)
            total += torch.where(done, 0.0, reward)
            done |= info["trial_end"]
        lines.append({"eval_trial_returns": total.tolist()})
    finally:
        torch.set_num_threads(threads)
    return "".join(json.dumps(line) + "\n" for line in lines)


# Training diagnostics (losses, KL, advantages, values, gradient norms: every float of a metrics line except the
# returns) are compared to DIAG_ABS absolute or DIAG_REL relative, the rest to ``rel``: the last bits of float
# arithmetic differ between CPUs (vector width, fused multiply-add), and a few updates amplify them in quantities
# near zero (an approx_kl of 5e-7, an imagined return of 0.007) while what the agent did (its actions, hence every
# return, episode count and evaluation number) stays the same to the digit.
DIAG_ABS, DIAG_REL = 1e-2, 1e-3


def compare(expected: str, got: str, rel: float = 1e-9) -> list[str]:
    """Differences between two records, line by line; numbers equal within ``rel`` count as equal (training
    diagnostics within DIAG_ABS / DIAG_REL)."""
    problems = []
    a, b = expected.splitlines(), got.splitlines()
    if len(a) != len(b):
        problems.append(f"{len(a)} lines recorded, {len(b)} now")
    for i, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y and not _line_close(json.loads(x), json.loads(y), rel):
            problems.append(f"line {i}: recorded {x[:300]} | now {y[:300]}")
    return problems


def _diagnostic(key: str) -> bool:
    return not any(w in key for w in ("step", "return", "episodes", "trials"))


def _line_close(x, y, rel: float) -> bool:
    if isinstance(x, dict) and isinstance(y, dict) and "step" in x:  # a training-metrics line
        return x.keys() == y.keys() and all(
            _num_close(x[k], y[k]) if _diagnostic(k) and isinstance(x[k], float) else _close(x[k], y[k], rel)
            for k in x)
    return _close(x, y, rel)


def _num_close(x, y) -> bool:
    return isinstance(y, int | float) and abs(x - y) <= max(DIAG_ABS, DIAG_REL * max(abs(x), abs(y)))


def _close(x, y, rel: float) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k], rel) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(u, v, rel) for u, v in zip(x, y, strict=True))
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(x, int | float) and isinstance(y, int | float) and abs(x - y) <= rel * max(abs(x), abs(y))
    return x == y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="record the cases into tests/golden/")
    ap.add_argument("--case", nargs="*", default=None, help="cases to run (default all)")
    args = ap.parse_args()
    everything = list(CASES) + list(META_CASES)
    names = args.case or everything
    unknown = [n for n in names if n not in everything]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose among {', '.join(everything)}")
    GOLDEN.mkdir(parents=True, exist_ok=True)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            record = run_meta_case(name) if name in META_CASES else run_case(name, Path(tmp))
            path = GOLDEN / f"{name}.jsonl"
            if args.write:
                path.write_text(record)
                print(f"{name}: recorded ({len(record.splitlines())} lines)")
                continue
            if not path.is_file():
                print(f"{name}: no record (run with --write)")
                failed += 1
                continue
            expected = path.read_text()
            if expected == record:
                print(f"{name}: identical, byte for byte")
                continue
            problems = compare(expected, record)
            print(f"{name}: {'equal within 1e-9' if not problems else 'DIFFERENT'}")
            for p in problems[:5]:
                print("   ", p)
            failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
