"""Convert format-1 checkpoints (ckpt_N.pt, pickles of dreamalloc before format 2) to format 2 (safetensors).

    python scripts/convert_checkpoint.py --trust checkpoints/RUN/ckpt_000000004096.pt [more files]

Reading a format-1 file UNPICKLES it, which runs whatever code the file names: use --trust only for files
you (or someone you trust) wrote. Without --trust nothing is read. The new file is written next to the old one.
"""

from __future__ import annotations

import argparse
import sys

from dreamalloc.experiment.checkpoint import CheckpointError, convert_legacy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--trust", action="store_true",
                    help="unpickle the files (runs any code they contain); required")
    a = ap.parse_args(argv)
    for f in a.files:
        try:
            print(f"{f} -> {convert_legacy(f, trust=a.trust)}")
        except (CheckpointError, OSError) as e:
            print(f"convert_checkpoint: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
