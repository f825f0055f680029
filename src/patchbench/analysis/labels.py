"""How tables and figures name interventions and metrics (the paper's spelling; the registries' labels).

Kept apart from :mod:`patchbench.analysis.style` so that table and claim jobs do not import
matplotlib and seaborn.
"""

from __future__ import annotations

from collections.abc import Iterable

from patchbench.interventions import corruptions, directions

__all__ = [
    "METRIC_LABELS",
    "METRIC_SHORT",
    "corruption_label",
    "intervention_order",
    "metric_label",
    "metric_short",
]

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
    """How tables and figures name an intervention (a corruption value, suffixed for a non-default
    direction): the corruption's registry label and its direction's suffix (``str`` / ``STR`` -> ``STR``;
    ``gn@nu=1`` -> ``GN(nu=1)``; ``str_noising`` -> ``STR (noising)``); anything else unchanged."""
    value, direction = directions.split_key(str(corruption))
    return corruptions.label(value) + directions.direction(direction).label_suffix


def intervention_order(labels: Iterable[str] = ()) -> list[str]:
    """The labels of interventions in table order: the paper's corruptions (always, denoising), then
    every other one of ``labels``: corruptions in registry order, each denoising before noising."""
    paper = [corruptions.label(n) for n in corruptions.paper()]

    def key(label: str) -> tuple:
        suffixes = [d.label_suffix for d in directions.DIRECTIONS.values()]
        d = max((i for i, x in enumerate(suffixes) if x and label.endswith(x)), default=0)
        base = label[: len(label) - len(suffixes[d])] if d else label
        return (*corruptions.order(base), d)

    return paper + sorted({str(x) for x in labels} - set(paper), key=key)


def metric_label(metric: str) -> str:
    """The paper's name of an effects-frame metric (unknown metrics pass through)."""
    return METRIC_LABELS.get(metric, metric)


def metric_short(metric: str) -> str:
    """The short name of an effects-frame metric (``LD`` for logit difference; unknown ones pass through)."""
    return METRIC_SHORT.get(metric, metric)
