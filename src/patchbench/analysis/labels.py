"""How tables and figures name interventions (the registries' labels), metrics (with their units), tasks and
sites, and how figures are titled.

Kept apart from :mod:`patchbench.analysis.style` so that table and claim jobs do not import
matplotlib and seaborn.
"""

from __future__ import annotations

from collections.abc import Iterable

from patchbench.interventions import corruptions, directions
from patchbench.interventions.sites import SITES

__all__ = [
    "METRIC_LABELS",
    "METRIC_SHORT",
    "METRIC_UNITS",
    "SITE_LABELS",
    "TASK_LABELS",
    "corruption_label",
    "figure_title",
    "intervention_order",
    "interventions_in_order",
    "metric_axis_label",
    "metric_label",
    "metric_short",
    "prompt_count",
    "site_label",
    "task_label",
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


def interventions_in_order(values: Iterable[str]) -> list[str]:
    """The distinct ``values`` (corruption keys such as ``str_noising`` or their labels) in table order
    (:func:`intervention_order` of their labels); values that name no intervention come last, sorted."""
    vals = list(dict.fromkeys(str(v) for v in values))
    order = intervention_order(corruption_label(v) for v in vals)
    rank = {label: i for i, label in enumerate(order)}
    return sorted(vals, key=lambda v: (rank.get(corruption_label(v), len(rank)), v))


def metric_label(metric: str) -> str:
    """The paper's name of an effects-frame metric (unknown metrics pass through)."""
    return METRIC_LABELS.get(metric, metric)


def metric_short(metric: str) -> str:
    """The short name of an effects-frame metric (``LD`` for logit difference; unknown ones pass through)."""
    return METRIC_SHORT.get(metric, metric)


#: What each metric's effect is measured in: the colour-bar and axis label's unit.
METRIC_UNITS: dict[str, str] = {
    "prob": "ΔP(answer)",
    "logit_diff": "normalised, 1 = clean",
    "kl": "ΔKL, nats",
    "stolfo": "relative change",
}
#: Display names of the built-in tasks (a user's task keeps its own name).
TASK_LABELS: dict[str, str] = {
    "ioi": "IOI, S2 corrupted",
    "ioi_s1io": "IOI, S1 and IO corrupted",
    "ioi_abc": "IOI, ABC corruption",
    "greater_than": "Greater-than",
    "docstring": "Docstring",
    "arithmetic_add": "Arithmetic (+)",
    "arithmetic_sub": "Arithmetic (−)",
    "arithmetic_mul": "Arithmetic (×)",
    "factual": "Factual recall",
}
#: Display names of the patch sites (the site registry's labels).
SITE_LABELS: dict[str, str] = {name: s.label for name, s in SITES.items()}
#: How a position mode reads in a title.
POSITION_LABELS: dict[str, str] = {
    "all": "",
    "each": "at every position",
    "subject_last": "at the last subject token",
    "END": "at the last token",
}


def metric_axis_label(metric: str, wrap: bool = False) -> str:
    """A colour bar's or axis's label: the metric and its unit (``Probability (ΔP(answer))``); ``wrap``
    puts the unit on a second line (a y axis)."""
    unit = METRIC_UNITS.get(metric)
    return f"{metric_label(metric)}{chr(10) if wrap else ' '}({unit})" if unit else metric_label(metric)


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def site_label(site: str, positions: str = "all") -> str:
    """``MLP at the last subject token``; a named position without a label reads ``at NAME``."""
    where = POSITION_LABELS.get(positions, f"at {positions}")
    return " ".join(x for x in (SITE_LABELS.get(site, site), where) if x)


def prompt_count(counts) -> str:
    """``120 prompts``, or ``100–120 prompts`` when the panels of a figure differ."""
    vals = sorted({int(c) for c in counts})
    if not vals:
        return "no prompts"
    return f"{vals[0]} prompts" if len(vals) == 1 else f"{vals[0]}–{vals[-1]} prompts"


def figure_title(task: str, site: str, model: str, counts, positions: str = "all", extra: str = "") -> str:
    """The title every figure carries: ``Task — site, model (n prompts)``, then ``extra`` on a line of its own."""
    head = f"{task_label(task)} — {site_label(site, positions)}, {model} ({prompt_count(counts)})"
    return f"{head}\n{extra}" if extra else head
