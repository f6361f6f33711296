"""Screenshots of the memory-map app's three pages, taken in a real headless Chromium, for the docs.

    python scripts/app_screenshots.py [--out docs/img]

Starts the app on 127.0.0.1 (a free port), and shoots: the Playground on Mandal & Rohil's heap with a request list
that frees a block, the Replay of the shipped sqlite_insert trace at a step where the methods' maps differ, and the
Results browser on a small run it trains first under outputs/ (a DQN on a 64-cell heap, 128 steps, evaluated with its
references; about 5 s). Needs chromium and chromedriver (``make app-screenshots`` installs them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def small_run(folder: Path) -> Path:
    """A DQN trained for 128 steps on a 64-cell heap, evaluated on 8 trials of 3 episodes with the references."""
    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
    from dreamalloc.experiment.training import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "logger=disabled", "progress=off", "device=cpu", "seed=0", "eval.trials=8", "eval.episodes_per_trial=3",
            "eval.timeline=false", "env=alloc64", "env.num_envs=4", "suite=lim2024_mixed", "steps=128", "agent=dqn",
            "agent.learning_starts=64"])
    cfg.run_dir, cfg.checkpoint_dir = str(folder / "run"), str(folder / "ckpt")
    return Path(train(cfg, [])["run_dir"])


def shoot(drv, path: Path, height: int | None = None) -> None:
    """The whole page (the browser window grown to the page's height) as PNG."""
    full = drv.execute_script("return document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight "
                              "|| document.body.scrollHeight")
    drv.set_window_size(1400, min(int(height or full) + 120, 4000))
    from dreamalloc.app import browser

    browser.idle(drv)
    browser.charts(drv)
    drv.save_screenshot(str(path))
    drv.set_window_size(1400, 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder for app_*.png")
    args = ap.parse_args(argv)
    from dreamalloc.app import browser

    _, _, missing = browser.find_browser()
    if missing:
        print(f"app_screenshots: {missing}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo = ROOT / "outputs" / "app_screenshots"  # outputs/ is ignored by git
    shutil.rmtree(demo, ignore_errors=True)
    run = small_run(demo).relative_to(ROOT)  # the server runs in the repository root
    with browser.app_server() as url, browser.chromium() as drv:
        drv.get(url)
        browser.idle(drv)
        browser.type_into(drv, "Requests (sizes in cells; fK frees block K)", "8, 12, 5, 9, f1, 11, 4, 6, 10")
        browser.choose(drv, "Request by request", "best")
        shoot(drv, out / "app_playground.png")
        browser.choose(drv, "Page", "Replay")
        browser.choose(drv, "Source", "shipped trace")
        shoot(drv, out / "app_replay.png", height=1900)
        browser.choose(drv, "Page", "Results browser")
        browser.type_into(drv, "Run directory or results.json", str(run))
        shoot(drv, out / "app_results.png")
    for name in ("app_playground.png", "app_replay.png", "app_results.png"):
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
