"""How tables and figures name corruptions and metrics (the paper's spelling).

Kept apart from :mod:`patchbench.analysis.style` so that table and claim jobs do not import
matplotlib and seaborn.
"""

from __future__ import annotations

__all__ = ["METRIC_LABELS", "METRIC_SHORT", "corruption_label", "metric_label", "metric_short"]

#: Display names of the effects frame's ``metric`` values, as the paper writes them.
METRIC_LABELS: dict[str, str] = {
    "prob": "Probability",
    "logit_diff": "Logit difference",
    "kl": "KL divergence",
    "stolfo": "Stolfo et al. (2)",
}
#: Short names for dense grids (robustness tables and figures).
METRIC_SHORT: dict[str, str] = {"prob": "P", "logit_diff": "LD", "kl": "KL", "stolfo": "Stolfo"}


def corruption_label(corruption: str) -> str:
    """``str`` / ``STR`` -> ``STR``; ``gn`` -> ``GN``; anything else unchanged."""
    up = str(corruption).upper()
    return up if up in {"STR", "GN"} else str(corruption)


def metric_label(metric: str) -> str:
    """The paper's name of an effects-frame metric (unknown metrics pass through)."""
    return METRIC_LABELS.get(metric, metric)


def metric_short(metric: str) -> str:
    """The short name of an effects-frame metric (``LD`` for logit difference; unknown ones pass through)."""
    return METRIC_SHORT.get(metric, metric)
