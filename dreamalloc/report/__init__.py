"""Tables, confidence intervals and pictures of results.

The pictures live in ``dreamalloc.report.plots`` (not re-exported: importing the tables should not pull
in matplotlib).

May import: numpy, scipy, matplotlib. Nothing else of dreamalloc (the experiment layer and scripts use it).
"""

from dreamalloc.report.results import find_results, latest_per_run, load_results, save_results, validate_results
from dreamalloc.report.stats import mean_ci
from dreamalloc.report.tables import (
    adaptation_rows,
    compare_curves,
    compare_rows,
    episode_curve,
    markdown_table,
    results_table,
    write_csv,
)

__all__ = [
    "adaptation_rows",
    "compare_curves",
    "compare_rows",
    "episode_curve",
    "find_results",
    "latest_per_run",
    "load_results",
    "markdown_table",
    "mean_ci",
    "results_table",
    "save_results",
    "validate_results",
    "write_csv",
]
