"""Tables, confidence intervals and pictures of results.

The pictures live in ``dreamalloc.report.plots`` (not re-exported: importing the tables should not pull
in matplotlib).

May import: numpy, scipy, matplotlib. Nothing else of dreamalloc (the experiment layer and scripts use it).
"""

from dreamalloc.report.results import (
    find_results,
    label_of,
    latest_per_run,
    load_results,
    save_results,
    validate_results,
)
from dreamalloc.report.stats import mean_ci
from dreamalloc.report.tables import (
    CI_NOTE_ADAPTATION,
    CI_NOTE_SEEDS,
    CI_NOTE_TRIALS,
    adaptation_rows,
    compare_curves,
    compare_rows,
    episode_curve,
    markdown_table,
    results_table,
    step_warnings,
    write_csv,
)

__all__ = [
    "CI_NOTE_ADAPTATION",
    "CI_NOTE_SEEDS",
    "CI_NOTE_TRIALS",
    "adaptation_rows",
    "compare_curves",
    "compare_rows",
    "episode_curve",
    "find_results",
    "label_of",
    "latest_per_run",
    "load_results",
    "markdown_table",
    "mean_ci",
    "results_table",
    "save_results",
    "step_warnings",
    "validate_results",
    "write_csv",
]
