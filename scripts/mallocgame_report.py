"""Tables and the placement picture of docs/mallocgame.md from the JSON files of scripts/mallocgame_train.py.

    python scripts/mallocgame_report.py --solvers solvers.json --agents agents.json:40k agents_long.json:300k \
        --png docs/mallocgame_placement.png

Prints every method's fraction of the total benefit per model (mean over its batch sizes; ``--per program``:
per program) and per set; agents: the mean over seeds with a 95 % t interval over seeds. Draws the placement
of one held-out program in the time x address plane.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamalloc.mallocgame.instances import program_set  # noqa: E402

SOLVER_COLS = ("game_first_fit", "game_best_fit", "first_fit_size", "greedy_area", "greedy_size", "search_ff",
               "milp_value", "milp_bound")


def ci(xs) -> tuple[float, float]:
    xs = np.asarray(xs, float)
    if len(xs) < 2:
        return float(xs.mean()), float("nan")
    return float(xs.mean()), float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / np.sqrt(len(xs)))


def fmt(m: float, h: float) -> str:
    return f"{m:.3f}" if np.isnan(h) else f"{m:.3f} ± {h:.3f}"


def draw(inst, placements: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, len(placements), figsize=(5.5 * len(placements), 4.2), sharey=True)
    scale = 1024.0
    for ax, (title, off) in zip(np.atleast_1d(axes), placements.items(), strict=True):
        off = np.asarray(off)
        got = inst.benefit[off >= 0].sum() / inst.total_benefit
        for i in range(inst.n):
            if off[i] >= 0:
                ax.add_patch(Rectangle((inst.start[i], off[i] / scale), inst.end[i] - inst.start[i],
                                       inst.size[i] / scale, facecolor=plt.cm.viridis(i / inst.n), edgecolor="k",
                                       linewidth=0.4))
        ax.axhline(inst.capacity / scale, color="r", linestyle="--", linewidth=1)
        ax.set_xlim(0, inst.horizon)
        ax.set_ylim(0, inst.capacity / scale * 1.05)
        ax.set_title(f"{inst.name}: {title}\n{int((off >= 0).sum())}/{inst.n} buffers fast, {got:.3f} of the benefit",
                     fontsize=9)
        ax.set_xlabel("schedule step")
    np.atleast_1d(axes)[0].set_ylabel("fast-memory address (KiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--solvers", required=True)
    p.add_argument("--agents", nargs="*", default=[], help="FILE[:LABEL] ...: agents.json files of "
                   "mallocgame_train.py; LABEL (e.g. the budget) is appended to their agents' names")
    p.add_argument("--png", default=None)
    p.add_argument("--per", choices=("model", "program"), default="model",
                   help="first table: one row per model and set (mean over its batch sizes) or per program")
    p.add_argument("--program", default="unet_b8", help="the held-out program to draw")
    args = p.parse_args(argv)
    progs = json.loads(Path(args.solvers).read_text())["programs"]
    agents = {}  # "name@label/seed" -> record
    for spec in args.agents:
        path, _, label = spec.partition(":")
        for key, rec in json.loads(Path(path).read_text())["agents"].items():
            name, seed = key.split("/")
            agents[f"{name}@{label}/{seed}" if label else key] = rec
    names = list(dict.fromkeys(k.split("/")[0] for k in agents))  # in the order of the files
    cols = [c for c in SOLVER_COLS if any(c in v for v in progs.values())]
    groups: dict[tuple, list[str]] = {}  # (model, set) -> its programs (every batch size)
    for prog, v in progs.items():
        groups.setdefault((prog.rsplit("_b", 1)[0], v["set"]) if args.per == "model" else (prog, v["set"]),
                          []).append(prog)
    print(f"| {args.per} | set | buffers | " + " | ".join(cols + names) + " |")
    print("|" + "---|" * (3 + len(cols) + len(names)))
    for (label, s), ps in groups.items():
        cells = [f"{np.mean([progs[k][c] for k in ps]):.3f}" if all(c in progs[k] for k in ps) else "-"
                 for c in cols]
        for n in names:  # per seed: the mean over the group's programs, then a t interval over seeds
            cells.append(fmt(*ci([np.mean([rec["eval"][s][k] for k in ps]) for key, rec in agents.items()
                                  if key.split("/")[0] == n])))
        print(f"| {label} | {s} | {progs[ps[0]]['n']} | " + " | ".join(cells) + " |")
    print()
    print("| set | " + " | ".join(cols + names) + " |")
    print("|" + "---|" * (1 + len(cols) + len(names)))
    for s in ("train", "heldout_models", "heldout_batch"):
        ps = [k for k, v in progs.items() if v["set"] == s]
        cells = [f"{np.mean([progs[k][c] for k in ps]):.3f}" if all(c in progs[k] for k in ps) else "-"
                 for c in cols]
        for n in names:  # per seed: the set's mean, then a t interval over seeds
            seeds = [np.mean([rec["eval"][s][k] for k in ps]) for key, rec in agents.items()
                     if key.split("/")[0] == n]
            cells.append(fmt(*ci(seeds)))
        print(f"| {s} | " + " | ".join(cells) + " |")
    if args.png:
        inst = program_set("all")
        inst = next(i for i in inst if i.name == args.program)
        v = progs[args.program]
        placements = {"XLA-style greedy (size, best-fit)": v["greedy_size_offsets"]}
        if agents:  # the best seed of the best agent on the held-out models
            best = max(agents, key=lambda k: np.mean(list(agents[k]["eval"]["heldout_models"].values())))
            placements[f"learnt: {best}"] = agents[best]["offsets"][args.program]
        placements["MILP optimum" if v["milp_optimal"] else "MILP (time limit)"] = v["milp_offsets"]
        draw(inst, placements, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
