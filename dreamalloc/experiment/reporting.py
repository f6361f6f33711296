"""Writes one evaluation to disk and to the logger: results.json, a Markdown table, CSV and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dreamalloc.report.plots import plot_adaptation, plot_heap_timeline, plot_recovery
from dreamalloc.report.results import save_results, write_json
from dreamalloc.report.stats import recovery_curve
from dreamalloc.report.tables import CI_NOTE_TRIALS, episode_curve, markdown_table, results_table, write_csv

COLUMNS = ["set", "task", "method", "return", "first_ep", "last_ep"]  # then the family's metrics, then:
REFERENCES = ["hindsight_rule", "hindsight_best", "capacity_bound"]


def columns(rows: list[dict], shown: list[str] | None = None) -> list[str]:
    """The table's columns: return and first / last episode, the metrics the env's family shows (``shown``,
    recorded in the results; all metrics the rows hold for results written without it), then the references."""
    if shown is None:
        fixed = set(COLUMNS) | set(REFERENCES) | {"seed", "step", "trials", "episodes", "switching_oracle"}
        shown = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in fixed]
    oracle = ["switching_oracle"] if any("switching_oracle" in r for r in rows) else []
    return COLUMNS + list(shown) + REFERENCES + oracle


def write_mode_results(results: dict, out_dir: Path) -> str:
    """An ``eval.mode`` document (evaluation.evaluate_mode): ``{mode}.json``, its table as ``{mode}.md`` and
    ``{mode}.csv``; returns the markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = results["mode"]
    write_json(out_dir / f"{mode}.json", results)
    write_csv(results["rows"], out_dir / f"{mode}.csv", results.get("columns"))
    table = markdown_table(results["rows"], results.get("columns"), digits=3)
    (out_dir / f"{mode}.md").write_text(table + "\n")
    return table


def write_evaluation(results: dict, out_dir: Path, logger=None, step: int | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timelines = results.pop("_timelines", {})
    save_results(out_dir / "results.json", results)
    rows = results_table(results)
    write_csv(rows, out_dir / "results.csv")
    cols = columns(rows, results.get("columns"))
    (out_dir / "results.md").write_text(markdown_table(rows, cols) + "\n" + CI_NOTE_TRIALS + "\n")
    images = {}
    for set_name, s in results["sets"].items():
        for task, t in s["tasks"].items():
            curves = {results["method"]: episode_curve(t["returns"])}
            if "hindsight_best" in t:  # absent with eval.baselines=off
                hb = t["hindsight_best"]
                curves[f"hindsight best ({hb['rule']})"] = episode_curve(hb["returns"])
                curves["capacity bound"] = episode_curve(t["capacity_bound"])
            images[f"adaptation/{set_name}/{task}"] = plot_adaptation(
                curves, out_dir / f"adaptation_{set_name}_{task}.png",
                title=f"{set_name} / {task}: return by episode within a trial")
            if "recovery" in t:  # in-episode switches: reward by decisions since a switch, agent and references
                rec = {results["method"] if name == "agent" else name: recovery_curve(c["sum"], c["count"])
                       for name, c in t["recovery"].items()}
                images[f"recovery/{set_name}/{task}"] = plot_recovery(
                    rec, out_dir / f"recovery_{set_name}_{task}.png",
                    title=f"{set_name} / {task}: reward after an in-episode switch")
    for key, owner in timelines.items():
        name = key.replace("/", "_")
        images[f"timeline/{key}"] = plot_heap_timeline(
            owner, out_dir / f"timeline_{name}.png", title=f"{results['method']} on {key}: heap over an episode")
    if logger is not None:
        flat = [[r.get(c) if not isinstance(r.get(c), tuple) else r[c][0] for c in cols] for r in rows]
        logger.log_table("eval_results", cols, flat, step=step)
        for name, path in images.items():
            logger.log_image(name, path, step=step)
    return out_dir


def print_results(results: dict | None) -> float | None:
    """Print the evaluation table; returns the mean return over all tasks (a sweep's objective)."""
    if not results:
        return None
    rows = results_table(results)
    print(markdown_table(rows, columns(rows, results.get("columns"))))
    print(CI_NOTE_TRIALS)
    return float(np.mean([r["return"][0] for r in rows]))
