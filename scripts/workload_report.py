"""Every heuristic on every task suite's held-out sets: what a fixed rule earns, which rule is best in
hindsight per task, and the capacity bound (an ideal compacting heap) on the same streams.

    python scripts/workload_report.py [--trials 200] [--seed 1000000000] [--env alloc256] [--suites a,b]
                                      [--out docs/workloads.md]

Trials use the evaluation protocol's stream seeds (seed + t for trial t, one episode each), so these rows
are the heuristic baselines every method's evaluation reports. Means carry 95 % t-intervals over trials.
The last lines summarise, per suite, which rule wins how many tasks: no fixed rule wins everywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

from dreamalloc.alloc.family import AllocEnvConf
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.references import capacity_bound, env_kwargs, heuristic_returns
from dreamalloc.alloc.workloads import STREAMS
from dreamalloc.experiment.config import SuiteConf, env_config, tasks_of
from dreamalloc.report import mean_ci

ROOT = Path(__file__).resolve().parents[1]


def load_group(group: str, name: str) -> dict:
    path = ROOT / "conf" / group / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        raise SystemExit(f"workload_report: no {group} config {name!r}; choose among {', '.join(names)}")
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    schema = {"env": AllocEnvConf, "suite": SuiteConf}[group]
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), raw), resolve=True)


def fmt(ci: tuple[float, float, float]) -> str:
    return f"{ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}]"


def is_alloc_suite(name: str) -> bool:
    """Allocation suites only: load-balancing suites (job laws, stream ``jobs``) have their own report,
    scripts/lb_heuristics.py."""
    suite = load_group("suite", name)
    return all(t.get("stream") in STREAMS for t in tasks_of(suite["train"]))


def report_suite(name: str, env: dict, trials: int, seed: int) -> tuple[list[str], Counter]:
    suite = load_group("suite", name)
    lines = [f"### {name}", "", "| set | task | " + " | ".join(f"{r} fit" for r in RULES)
             + " | hindsight best | capacity bound |", "|---" * (len(RULES) + 4) + "|"]
    wins: Counter = Counter()
    for set_name, tasks in suite["heldout"].items():
        for task in tasks_of(tasks):
            kw = env_kwargs(env_config(env, [task]))
            ci = {r: mean_ci(heuristic_returns(r, trials, seed, **kw)["return"]) for r in RULES}
            best = max(RULES, key=lambda r: ci[r][0])
            wins[best] += 1
            cap = mean_ci(capacity_bound(trials, seed, **kw)["return"])
            cells = [f"**{fmt(ci[r])}**" if r == best else fmt(ci[r]) for r in RULES]
            lines.append(f"| {set_name} | {task['name']} | " + " | ".join(cells) + f" | {best} | {fmt(cap)} |")
            print(lines[-1], flush=True)
    lines.append("")
    return lines, wins


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1_000_000_000, help="stream seed of trial 0 (eval.seed)")
    ap.add_argument("--env", default="alloc256", help="a config under conf/env")
    ap.add_argument("--suites", default=None, help="comma-separated; default: every file in conf/suite")
    ap.add_argument("--out", default=str(ROOT / "docs" / "workloads.md"), help="'' to skip writing")
    args = ap.parse_args(argv)
    if args.trials < 2:
        raise SystemExit("workload_report: --trials must be >= 2 (the intervals need two samples)")
    env = load_group("env", args.env)
    names = args.suites.split(",") if args.suites else [n for n in sorted(p.stem for p in (ROOT / "conf" / "suite")
                                                                     .glob("*.yaml")) if is_alloc_suite(n)]
    t0 = time.perf_counter()
    body, summary = [], []
    for name in names:
        print(f"\n## suite {name}", flush=True)
        lines, wins = report_suite(name, env, args.trials, args.seed)
        body += lines
        summary.append(f"| {name} | {sum(wins.values())} | " + " | ".join(str(wins.get(r, 0)) for r in RULES) + " |")
    overall = ["| suite | tasks | " + " | ".join(f"{r} fit best" for r in RULES) + " |",
               "|---" * (len(RULES) + 2) + "|", *summary]
    print("\n" + "\n".join(overall))
    secs = time.perf_counter() - t0
    print(f"\n{len(names)} suites, {args.trials} trials per task, {secs:.0f} s")
    if args.out:
        cmd = "python scripts/workload_report.py" + "".join(f" {a}" for a in (argv if argv is not None else
                                                                                sys.argv[1:]))
        doc = ["# Workloads: heuristics on every task suite", "",
               "Generated by", "", f"    {cmd}", "",
               f"Env `conf/env/{args.env}.yaml` ({env['cells']} cells, Lim & Maddukuri's reward: 0.1 per "
               f"allocation). Each held-out task: {args.trials} trials of one episode on stream seeds "
               f"{args.seed}..{args.seed + args.trials - 1} (the evaluation protocol's seeds, so these are the "
               "baselines every evaluation reports). Mean return with its 95 % t-interval over trials; the "
               "best fixed rule per task in bold (hindsight best); the capacity bound is an ideal compacting "
               f"heap on the same streams, which no placement policy can beat. Run time {secs:.0f} s on 2 cores.",
               "", "## Which fixed rule wins", "", *overall, "", "## Per task", "", *body]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("\n".join(doc) + "\n")
        tmp.replace(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
