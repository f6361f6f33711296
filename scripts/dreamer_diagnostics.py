"""What a trained DreamerV3 (agent=dreamer / dreamer_rl2) gets wrong on its own env: reward, imagined-return,
continue and value errors binned by an info key and by the steps to the episode's end, decoder R^2 per observation
dimension, reward spread, policy entropy and the return normaliser (dreamalloc/agents/dreamer/diagnostics.py).

    python scripts/dreamer_diagnostics.py RUN_DIR_OR_CHECKPOINT [--all] [--steps 3000] [--envs 4] \
        [--bin-key jobs_in_system] [--out diag.json]

``--all``: every checkpoint of the run (checkpoint_every=...) in step order, so the measurements are a series over
training. The env is the run's training env (its config in the checkpoint). Exit status 2 with one message on a
user error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dreamalloc.agents.dreamer.diagnostics import diagnose, report
from dreamalloc.experiment.checkpoint import CheckpointError, list_checkpoints
from dreamalloc.experiment.config import make_core
from dreamalloc.experiment.inference import find_checkpoint, load_agent


def checkpoints(path: str, every: bool) -> list[Path]:
    last = find_checkpoint(path)
    return list_checkpoints(last.parent) if every else [last]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a run directory, a checkpoint folder or a checkpoint file")
    ap.add_argument("--all", action="store_true", help="every checkpoint of the run, in step order")
    ap.add_argument("--steps", type=int, default=3000, help="env steps per env row")
    ap.add_argument("--envs", type=int, default=4)
    ap.add_argument("--bin-key", default=None, help="an info entry [B] to bin the errors by (e.g. jobs_in_system)")
    ap.add_argument("--horizon", type=int, default=15, help="imagined steps of the open-loop return check")
    ap.add_argument("--seed", type=int, default=12_345)
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    try:
        files = checkpoints(a.path, a.all)
        series = []
        for f in files:
            loaded = load_agent(f, device="cpu")
            if not hasattr(loaded.agent, "wm"):
                raise ValueError(f"{f} holds a {loaded.meta.get('agent')!r} agent; these diagnostics are for "
                                 "agent=dreamer / dreamer_rl2")
            cfg = loaded.config
            core = make_core(cfg.env, cfg.suite.train, a.envs, loaded.device)
            torch.manual_seed(a.seed)
            d = diagnose(loaded.agent, core, a.steps, seed=a.seed, bin_key=a.bin_key, horizon=a.horizon)
            d["checkpoint"], d["step"] = str(f), loaded.step
            print(report(loaded.step, d), flush=True)
            series.append(d)
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        print(f"dreamer_diagnostics: {e}", file=sys.stderr)
        sys.exit(2)
    if a.out:
        Path(a.out).write_text(json.dumps(series, indent=1))


if __name__ == "__main__":
    main()
