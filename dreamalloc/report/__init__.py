"""Tables, confidence intervals and pictures of results."""

from dreamalloc.report.stats import mean_ci

__all__ = ["mean_ci"]
