"""Which placement rule does an agent's choice agree with, by hidden regime and decisions since a switch?

    python scripts/rule_agreement.py CHECKPOINT [--sets short,order] [--trials 32] [--markdown]

For suites whose streams switch regime inside an episode (e.g. shift_rules), allocation env in the heuristic
action space. The agent acts greedily as the evaluation has it act (``eval.deterministic``, the evaluation's
stream seeds ``eval.seed + t``, one trial of ``eval.episodes_per_trial`` episodes per row), and at every decision
the script also asks the heap which address each of the env's placement rules would choose. Several rules often
pick the same address (a single hole fits), so the action's label says little; what counts is the address.

Per held-out set, regime (the stream's hidden ``task_id``) and window of decisions since the last switch (the
first segment, before any switch, on its own), it prints the number of decisions, ``split``: the share of them
where the rules do not all pick the same address, and for each rule the share of those split decisions where the
agent's address is that rule's. A detection lag shows as the previous regime's rule kept in the first window after
a switch; a steady-state weakness as a split vote in the late windows. Exit status 2 with one message on a user
error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamalloc.core.rollout import run_episodes  # noqa: E402
from dreamalloc.core.spec import SEGMENT, TASK_ID  # noqa: E402
from dreamalloc.experiment.config import make_core, tasks_of  # noqa: E402
from dreamalloc.experiment.evaluation import agent_policy  # noqa: E402
from dreamalloc.experiment.inference import load_agent  # noqa: E402
from dreamalloc.report.tables import markdown_table  # noqa: E402

WINDOWS = ((0, 8), (8, 32), (32, None))  # decisions since the switch that opened the segment


def record(agent, env, task: dict, trials: int, k: int, seed: int, deterministic: bool, device) -> dict:
    """Per decision [T, B]: regime, segment, and whether the agent's address equals each rule's."""
    core = make_core(env, [task], trials, device, trial_episodes=k)
    rules = list(env.heuristics)
    acting = agent_policy(agent, core, task, trials, deterministic)
    rows: dict[str, list] = {"task": [], "segment": [], "same": [], "split": []}

    def policy(obs, info):
        if SEGMENT not in info or TASK_ID not in info:
            raise ValueError(f"task {task['name']!r}: its stream does not switch regime inside an episode (the env "
                             "reports no segment / task_id), so there is no regime to break the choices down by")
        action = acting(obs, info)
        addr = torch.stack([core.addresses(torch.full_like(action, i))[0] for i in range(len(rules))], 1)  # [B, R]
        mine = addr.gather(1, action.view(-1, 1).long())
        rows["task"].append(info[TASK_ID].clone())
        rows["segment"].append(info[SEGMENT].clone())
        rows["same"].append(addr == mine)
        rows["split"].append((addr != addr[:, :1]).any(1))
        return action

    res = run_episodes(core, policy, seed, k)
    out = {key: torch.stack(v).cpu().numpy() for key, v in rows.items()}
    out["length"] = np.asarray(res["length"]).sum(1)  # decisions per row over its k episodes
    out["rules"] = rules
    names = getattr(getattr(core, "stream", None), "names", None)
    out["names"] = list(names) if names else None
    return out


def agreement_rows(rec: dict, set_name: str) -> list[dict]:
    task, seg, same, split = rec["task"], rec["segment"], rec["same"], rec["split"]
    T, B = task.shape
    # a row that finished its trial keeps stepping until every row has: only its first decisions count
    live = np.arange(T)[:, None] < rec["length"][None, :]
    since = np.zeros_like(seg)
    for t in range(1, T):
        since[t] = np.where(seg[t] != seg[t - 1], 0, since[t - 1] + 1)
    rules, names = rec["rules"], rec["names"]
    out = []
    for reg in np.unique(task[live]):
        windows = [("first segment", (seg == 0))] + [
            (f"{lo}-{hi - 1}" if hi else f"{lo}+", (seg > 0) & (since >= lo) & ((since < hi) if hi else True))
            for lo, hi in WINDOWS]
        for label, m in windows:
            m = m & live & (task == reg)
            n = int(m.sum())
            if not n:
                continue
            s = m & split
            row = {"set": set_name, "regime": names[reg] if names and reg < len(names) else str(reg),
                   "since switch": label, "decisions": n, "split": f"{s.sum() / n:.2f}"}
            for i, r in enumerate(rules):
                row[r] = f"{same[..., i][s].mean():.2f}" if s.any() else "n/a"
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a checkpoint file, a checkpoint folder or a run directory")
    ap.add_argument("--sets", default="", help="comma-separated held-out sets (default: all of the suite's)")
    ap.add_argument("--trials", type=int, default=0, help="trials per set (default: the checkpoint's eval.trials)")
    ap.add_argument("--markdown", action="store_true", help="print only the markdown table")
    args = ap.parse_args(argv)
    try:
        loaded = load_agent(args.checkpoint, "cpu")
        cfg = loaded.config
        if cfg.env.get("kind", "alloc") != "alloc" or cfg.env.action != "heuristic":
            raise ValueError("rule_agreement needs an allocation env in the heuristic action space (env.action="
                             f"heuristic), not {cfg.env.get('kind', 'alloc')} / {cfg.env.get('action')}")
        heldout = dict(cfg.suite.heldout)
        want = [s for s in args.sets.split(",") if s] or list(heldout)
        unknown = [s for s in want if s not in heldout]
        if unknown:
            raise ValueError(f"unknown held-out set(s) {unknown}; the suite {cfg.suite.name!r} has {list(heldout)}")
        trials = args.trials or int(cfg.eval.trials)
        if trials < 1:
            raise ValueError(f"--trials must be >= 1, got {trials}")
        table = []
        for set_name in want:
            for task in tasks_of(heldout[set_name]):
                with torch.no_grad():
                    rec = record(loaded.agent, cfg.env, task, trials, int(cfg.eval.episodes_per_trial),
                                 int(cfg.eval.seed), bool(cfg.eval.deterministic), loaded.device)
                table += agreement_rows(rec, set_name)
    except (OSError, ValueError, KeyError) as e:
        print(f"rule_agreement: {e}", file=sys.stderr)
        return 2
    if not table:
        print("rule_agreement: no decisions recorded (does the suite's stream switch regime inside an episode?)",
              file=sys.stderr)
        return 2
    if not args.markdown:
        print(f"{loaded.path} (step {loaded.step}), {trials} trials per set; per rule: the share of split decisions "
              "(the rules disagree) where the agent's address is that rule's")
    print(markdown_table(table, list(table[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
