"""Start the memory-map app: ``python -m dreamalloc.app [--port 8501] [--address 127.0.0.1] [--headless]``.

Runs ``streamlit run dreamalloc/app/streamlit_app.py`` with the given server options and opens the browser
unless ``--headless``; anything after ``--`` goes to streamlit unchanged.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "streamlit_app.py"


def command(argv: list[str] | None = None) -> list[str]:
    """The streamlit command line for these arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m dreamalloc.app", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    ap.add_argument("--address", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine)")
    ap.add_argument("--headless", action="store_true", help="do not open a browser")
    args = ap.parse_args(argv)
    if not 1 <= args.port <= 65535:
        ap.error(f"--port must lie in [1, 65535], got {args.port}")
    return [sys.executable, "-m", "streamlit", "run", str(SCRIPT), "--server.address", args.address,
            "--server.port", str(args.port), "--server.headless", "true" if args.headless else "false",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer", *extra]


def main(argv: list[str] | None = None) -> int:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("dreamalloc.app needs streamlit and plotly: pip install -e '.[dev]' (or pip install streamlit plotly)",
              file=sys.stderr)
        return 2
    proc = subprocess.Popen(command(argv))
    # streamlit runs as a child: a SIGTERM to this process (a supervisor, a test stopping the server) is passed
    # on, so the server does not outlive it (Ctrl-C reaches both through the terminal's process group)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
