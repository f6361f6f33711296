"""Export the policy of a trained run: the networks the agent acts with, its config and meta, in one safetensors
file (no optimiser state, replay, rollout, target networks or env state), for ``dreamalloc.load_agent`` and
``python evaluate.py checkpoint=FILE``.

    python scripts/export_policy.py outputs/DATE/TIME_dqn_lim2024_s0            # a run directory
    python scripts/export_policy.py checkpoints/RUN/ckpt_000000100000.safetensors --out dqn_policy.safetensors

Prints the file written and its size beside the checkpoint's.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dreamalloc.experiment.inference import export_policy, find_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a checkpoint file, a folder of checkpoints, or a run directory")
    p.add_argument("--out", default=None, help="the file to write (default: policy_STEP.safetensors beside the "
                                               "checkpoint)")
    args = p.parse_args(argv)
    ckpt = find_checkpoint(args.path)
    out = export_policy(ckpt, args.out)
    print(f"policy: {out} ({os.path.getsize(out):,} bytes; checkpoint {ckpt}: {os.path.getsize(ckpt):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
