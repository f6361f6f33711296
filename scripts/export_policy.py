"""Export the policy of a trained run: the networks the agent acts with, its config and meta, in one safetensors
file (no optimiser state, replay, rollout, target networks or env state), for ``dreamalloc.load_agent`` and
``python evaluate.py checkpoint=FILE``.

    python scripts/export_policy.py outputs/DATE/TIME_dqn_lim2024_s0            # a run directory
    python scripts/export_policy.py checkpoints/RUN/ckpt_000000100000.safetensors --out dqn_policy.safetensors
    python scripts/export_policy.py RUN_DIR --onnx policy.onnx     # the decision alone, for ONNX Runtime

``--onnx`` writes the deterministic decision at batch 1 as an ONNX model instead (dqn, ppo, a2c, rl2_ppo, dreamer;
the ``export`` extra), checked against the agent before it is kept; run it with
``dreamalloc.experiment.onnx_export.OnnxPolicy`` (see that module).

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
    p.add_argument("--onnx", default=None, metavar="FILE.onnx", help="write the decision as an ONNX model instead")
    args = p.parse_args(argv)
    ckpt = find_checkpoint(args.path)
    if args.onnx:
        from dreamalloc.experiment.onnx_export import export_onnx

        if args.out:
            p.error("--onnx FILE names the file to write; leave --out out")
        out = export_onnx(ckpt, args.onnx)
        print(f"onnx: {out} ({os.path.getsize(out):,} bytes; checkpoint {ckpt}: {os.path.getsize(ckpt):,} bytes)")
        return 0
    out = export_policy(ckpt, args.out)
    print(f"policy: {out} ({os.path.getsize(out):,} bytes; checkpoint {ckpt}: {os.path.getsize(ckpt):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
